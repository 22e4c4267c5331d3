"""The request sent to the teacher: our own instruction text, then in-context seed tasks as
numbered ``N. Instruction:`` / ``N. Input:`` / ``N. Output:`` blocks separated by ``###``,
ending with the next number's ``Instruction:`` line (the block format of Stanford Alpaca's
public generation code; the instruction text below is ours)."""

from __future__ import annotations

import random
import re
from pathlib import Path

from alpaca_jobs.generate.seeds import SeedTask

NO_INPUT = "<noinput>"

INSTRUCTION_TEXT = """\
Your job is to invent {n} new and varied tasks for a helpful assistant, together with a good
answer to each. These tasks will teach a language model to follow instructions, so variety
matters more than anything else.

Rules:
1. Use many different verbs and kinds of task: open questions, brainstorming, rewriting,
   classification, extraction, explanation, planning, short creative writing, simple maths,
   reasoning and everyday advice.
2. Write instructions in plain English, one or two sentences each. Mix imperatives
   ("Summarize ...") with questions ("What is ...?").
3. A text-only assistant must be able to do every task: nothing that needs pictures, sound,
   files, browsing the web or acting in the world.
4. Some tasks need an input (a passage, a list, a sentence, a table in text, some code).
   When one does, give a real and specific input of at most about 100 words. When a task
   needs no input, write {no_input} as its input.
5. Give each task an output that a careful expert would write, under about 100 words.

Write the tasks in exactly the numbered format of the examples below, separate tasks with a
line holding only ###, and keep counting from the examples' numbers.
"""


def instruction_text(n: int, prompt_file: str | None = None) -> str:
    """Our text, or the user's own (``{n}`` and ``{no_input}`` are filled in when present)."""
    text = Path(prompt_file).read_text() if prompt_file else INSTRUCTION_TEXT
    return text.replace("{n}", str(n)).replace("{no_input}", NO_INPUT)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(":")


def build_prompt(examples: list[SeedTask], n_tasks: int, prompt_file: str | None = None) -> str:
    parts = [instruction_text(n_tasks, prompt_file).rstrip("\n") + "\n"]
    for i, task in enumerate(examples, 1):
        parts.append(f"###\n{i}. Instruction: {_clean(task.instruction)}\n"
                     f"{i}. Input:\n{task.input or NO_INPUT}\n{i}. Output:\n{task.output}\n")
    parts.append(f"###\n{len(examples) + 1}. Instruction:")
    return "".join(parts)


def request_examples(seeds: list[SeedTask], k: int, seed: int, index: int) -> list[int]:
    """The seed tasks shown in request ``index``: a pure function of (seed, index), so a
    restarted job asks exactly what it would have asked."""
    rng = random.Random(f"{seed}:{index}")
    return rng.sample(range(len(seeds)), k)
