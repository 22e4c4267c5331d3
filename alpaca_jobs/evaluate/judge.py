"""The LLM judge: every pair is judged twice, once in each order, to cancel position bias.

The judge sees the request and two responses labelled A and B (whichever system is first), and
answers ``Verdict: A``, ``Verdict: B`` or ``Verdict: tie``. A reply we cannot read is recorded
as ``invalid`` and kept, never fatal. Per item, the two orders combine as: both prefer the same
system -> that system wins; they disagree, or either says tie -> tie; either invalid -> invalid
(excluded from the win rate, counted in the report).

``judge_prompt_file`` replaces our prompt; it must contain ``{instruction}``, ``{output_a}``
and ``{output_b}``, which are filled in one pass (text inside outputs is never re-expanded).
"""

from __future__ import annotations

import concurrent.futures as cf
import re
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.evaluate.collect import output_key, stop_pools
from alpaca_jobs.evaluate.instructions import Item
from alpaca_jobs.evaluate.store import Appender, read_jsonl

PLACEHOLDERS = ("{instruction}", "{output_a}", "{output_b}")
ORDERS = ("ab", "ba")  # "ab": system_a is shown as A; "ba": system_b is shown as A

DEFAULT_PROMPT = """\
Two assistants answered the same request from a user. Decide which answer serves the user better:
it does what was asked, it is correct, it is clear, and it is no longer than it needs to be.
Which answer comes first tells you nothing about its quality, and neither does length alone.

[Request]
{instruction}

[Answer A]
{output_a}

[Answer B]
{output_b}

Reply with a single line and nothing else: "Verdict: A" if answer A is better, "Verdict: B" if
answer B is better, or "Verdict: tie" if neither is clearly better.
"""

_TIE_WORDS = {"tie", "draw", "equal", "neither", "both"}
_TOKEN = r"(A|B|tie|draw|equal|neither|both)"
_VERDICT = re.compile(r"verdict\s*(?:is)?\s*[:=\-]?\s*[\s*\"'`\[(]*(?:answer|response|output)?\s*"
                      + _TOKEN + r"\b", re.IGNORECASE)
_BRACKETS = re.compile(r"\[\[\s*" + _TOKEN + r"\s*\]\]", re.IGNORECASE)
_BARE = re.compile(r"^[\s*\"'`\[(]*(?:answer|response|output)?\s*" + _TOKEN + r"[\s*\"'`\])!.]*$",
                   re.IGNORECASE)


def load_prompt(path: str | None) -> str:
    if path is None:
        return DEFAULT_PROMPT
    p = Path(path)
    if not p.is_file():
        raise UserError(f"evaluate.judge_prompt_file: {path}: no such file")
    # Editors end files with a newline; a prompt that ends mid-sentence ("...is Answer") for a
    # completions judge must not (the judge would answer the newline).
    text = p.read_text(encoding="utf-8").removesuffix("\n")
    absent = [ph for ph in PLACEHOLDERS if ph not in text]
    if absent:
        raise UserError(f"evaluate.judge_prompt_file: {path} lacks {', '.join(absent)}; the judge "
                        f"prompt must contain all of {', '.join(PLACEHOLDERS)}")
    return text


def render(template: str, request: str, output_a: str, output_b: str) -> str:
    values = {"{instruction}": request, "{output_a}": output_a, "{output_b}": output_b}
    return re.sub(r"\{instruction\}|\{output_a\}|\{output_b\}", lambda m: values[m.group(0)], template)


def parse_verdict(text: str) -> str:
    """"A", "B", "tie" or "invalid". ``Verdict: X`` lines win (all must agree); then ``[[X]]``;
    then a reply that is nothing but the token."""
    for pattern in (_VERDICT, _BRACKETS):
        found = {_norm(m) for m in pattern.findall(text or "")}
        if found:
            return found.pop() if len(found) == 1 else "invalid"
    m = _BARE.match(text or "")
    return _norm(m.group(1)) if m else "invalid"


def _norm(token: str) -> str:
    return "tie" if token.lower() in _TIE_WORDS else token.upper()


def preferred(verdict: str, first: str, second: str) -> str:
    """The system a position verdict points at, or "tie" / "invalid"."""
    return {"A": first, "B": second}.get(verdict, verdict)


def combine(judgments: list[dict[str, Any]], name_a: str, name_b: str) -> dict[str, str]:
    """Per item with both orders judged: "a", "b", "tie" or "invalid"."""
    by_item: dict[str, dict[str, str]] = {}
    for j in judgments:
        by_item.setdefault(j["item"], {})[j["order"]] = j["preferred"]
    label = {name_a: "a", name_b: "b", "tie": "tie", "invalid": "invalid"}
    out = {}
    for item, orders in by_item.items():
        if set(orders) != set(ORDERS):
            continue
        first, second = (label[orders[o]] for o in ORDERS)
        if "invalid" in (first, second):
            out[item] = "invalid"
        else:
            out[item] = first if first == second else "tie"
    return out


def read_judgments(path: Path) -> list[dict[str, Any]]:
    return list({(j["item"], j["order"]): j for j in read_jsonl(path)}.values())


def pending(items: list[Item], outputs: dict, names: tuple[str, str],
            judgments: list[dict[str, Any]]) -> list[tuple[Item, str]]:
    """(item, order) pairs with both outputs in hand and no judgment yet."""
    done = {(j["item"], j["order"]) for j in judgments}
    return [(it, order) for it in items for order in ORDERS
            if (it.id, order) not in done and all(output_key(it.id, n) in outputs for n in names)]


def judge_all(items: list[Item], outputs: dict, names: tuple[str, str], client, template: str,
              path: Path, seed: int) -> list[dict[str, Any]]:
    """Judge every item in both orders; what is already in ``path`` is not asked again."""
    done = {(j["item"], j["order"]): j for j in read_jsonl(path)}
    todo = pending(items, outputs, names, list(done.values()))
    pool = cf.ThreadPoolExecutor(client.cfg["in_flight"], thread_name_prefix="judge")
    with Appender(path) as out:
        try:
            futures = [pool.submit(_one, client, template, it, order, outputs, names, seed, out)
                       for it, order in todo]
            for fut in cf.as_completed(futures):
                j = fut.result()
                done[(j["item"], j["order"])] = j
        except BaseException as exc:
            stop_pools([pool], exc)
            raise
        stop_pools([pool])
    return list(done.values())


def _one(client, template: str, item: Item, order: str, outputs: dict, names: tuple[str, str],
         seed: int, out: Appender) -> dict[str, Any]:
    first, second = names if order == "ab" else names[::-1]
    prompt = render(template, item.prompt, outputs[output_key(item.id, first)]["output"],
                    outputs[output_key(item.id, second)]["output"])
    reply = client.complete(prompt, seed=seed)
    verdict = parse_verdict(reply.text)
    record = {"item": item.id, "order": order, "first": first, "second": second, "verdict": verdict,
              "preferred": preferred(verdict, first, second), "raw": reply.text[:2000],
              "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
              "attempts": reply.attempts}
    out.add(record)
    return record
