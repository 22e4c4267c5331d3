"""The Alpaca prompt format: a one-line preamble and ``### Instruction/Input/Response`` sections."""

from __future__ import annotations

INSTRUCTION = "### Instruction:"
INPUT = "### Input:"
RESPONSE = "### Response:"


def format_prompt(
    instruction: str, input_text: str, preamble_with_input: str, preamble_no_input: str
) -> str:
    """The prompt the model sees; the target (output + EOS) follows it directly."""
    if input_text.strip():
        return (
            f"{preamble_with_input}\n\n{INSTRUCTION}\n{instruction}\n\n"
            f"{INPUT}\n{input_text}\n\n{RESPONSE}\n"
        )
    return f"{preamble_no_input}\n\n{INSTRUCTION}\n{instruction}\n\n{RESPONSE}\n"
