"""Moderation of prompts and outputs.

With ``ALPACA_JOBS_MODERATION=openai`` and an OpenAI key in the environment, text goes to
OpenAI's moderation endpoint through the ``openai`` client. Otherwise (the default) the
local moderator below decides. Its limits, plainly: it is a list of English patterns for a
few clearly harmful request types. It misses paraphrases, other languages and anything
subtle, and it can flag harmless text that uses the same words (a history question about
explosives). It is a floor, not a classifier; put the OpenAI endpoint or a real moderation
model in front of anything public.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

_RULES: dict[str, list[str]] = {
    "violence/weapons": [r"\b(build|make|assemble|construct)\b.{0,40}\b(bomb|explosive|pipe bomb|grenade|napalm)s?\b",
                         r"\bhow (do i|to|can i)\b.{0,30}\b(kill|murder|poison)\b.{0,30}\b(someone|a person|people|my)\b"],
    "self-harm": [r"\b(how|ways?|best way) to (kill myself|commit suicide|end my life|self[- ]harm)\b",
                  r"\bi (want|am going) to (kill myself|end my life)\b"],
    "sexual/minors": [r"\b(sexual|explicit|nude)\b.{0,40}\b(child|children|minor|kid|underage)s?\b",
                      r"\b(child|minor|underage)s?\b.{0,40}\b(sexual|explicit|nude)\b"],
    "illicit/drugs": [r"\b(synthesi[sz]e|cook|make|manufacture)\b.{0,30}\b(meth|methamphetamine|fentanyl|heroin)\b"],
    "malware": [r"\b(write|create|build)\b.{0,30}\b(ransomware|keylogger|computer virus|botnet)\b"],
}
_COMPILED = {cat: [re.compile(p, re.I | re.S) for p in pats] for cat, pats in _RULES.items()}


@dataclass
class Verdict:
    flagged: bool
    categories: dict[str, bool] = field(default_factory=dict)
    source: str = "local"


def local_moderate(text: str) -> Verdict:
    cats = {cat: any(p.search(text) for p in pats) for cat, pats in _COMPILED.items()}
    return Verdict(any(cats.values()), cats, "local")


def moderate(text: str) -> Verdict:
    if os.environ.get("ALPACA_JOBS_MODERATION") == "openai" and os.environ.get("OPENAI_API_KEY"):
        from openai import OpenAI

        result = OpenAI().moderations.create(input=text).results[0]
        cats = {k: bool(v) for k, v in result.categories.model_dump().items()}
        return Verdict(bool(result.flagged), cats, "openai")
    return local_moderate(text)


REFUSAL = ("I can't help with that request. It was stopped by this server's content moderation; "
           "if you think that is a mistake, flag it.")
