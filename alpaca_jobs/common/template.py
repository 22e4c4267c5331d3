"""The Alpaca prompt format: a one-line preamble and ``### Instruction/Input/Response`` sections."""

from __future__ import annotations

from alpaca_jobs.common.config import Strict

INSTRUCTION = "### Instruction:"
INPUT = "### Input:"
RESPONSE = "### Response:"


class PromptFormat(Strict):
    """The preamble sentences are ours; the ``### ...:`` section markers are the Alpaca format.
    Trained with (``train.prompt``) and kept with the model, so serving uses the same."""

    preamble_with_input: str = (
        "Here is a task, paired with more context. Write a reply that carries out the task."
    )
    preamble_no_input: str = "Here is a task. Write a reply that carries out the task."


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


def _literal(text: str) -> str:
    """``text`` as literal Jinja output, whatever braces or quotes it holds (a string literal)."""
    import json

    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


def chat_template(preamble_with_input: str, preamble_no_input: str, bos: bool) -> str:
    """The Alpaca prompt as a tokenizer chat template, so transformers, vLLM and TGI render the
    prompt the model was trained on: the last user message is the instruction; an input, when
    there is one, comes as the template variable ``input`` (``apply_chat_template(messages,
    input=...)``). ``bos``: the tokenizer adds a BOS token when it encodes (templates are
    tokenized without special tokens, so the template writes it)."""
    head = "{{ bos_token }}" if bos else ""
    return (
        "{%- set ns = namespace(instruction='') -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}{%- set ns.instruction = message['content'] -%}{%- endif -%}"
        "{%- endfor -%}"
        + head +
        "{%- if input is defined and input is string and input | trim -%}"
        + _literal(f"{preamble_with_input}\n\n{INSTRUCTION}\n") + "{{ ns.instruction }}"
        + _literal(f"\n\n{INPUT}\n") + "{{ input }}" + _literal(f"\n\n{RESPONSE}\n")
        + "{%- else -%}"
        + _literal(f"{preamble_no_input}\n\n{INSTRUCTION}\n") + "{{ ns.instruction }}"
        + _literal(f"\n\n{RESPONSE}\n")
        + "{%- endif -%}"
    )
