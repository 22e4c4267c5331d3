"""The serve kind's check once it is up: its answers carry the watermark, people's text does not."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


def watermark_check(url: str, model: str, min_tokens: int = 100) -> dict[str, Any]:
    """Ask the served model through the real openai client (up to three answers, until one is
    long enough to score), then have the server's detector score that answer (watermarked)
    and a human-written paragraph (not)."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="unused-local", max_retries=2)
    text = ""
    for seed in (7, 8, 9):
        reply = client.chat.completions.create(
            model=model, max_tokens=300, temperature=1.0, seed=seed,
            messages=[{"role": "user", "content": "Write a long story about a lighthouse keeper "
                                                  "and a storm, with many details."}])
        if len(reply.choices[0].message.content or "") > len(text):
            text = reply.choices[0].message.content or ""
        if (reply.usage.completion_tokens or 0) >= min_tokens:
            break
    human = ("Gray streets hum softly while umbrellas bloom at every crosswalk, and the puddles "
             "hold a piece of the sky for anyone who looks down on the way home from work. The "
             "baker on the corner props the door open so the smell of bread drifts into the rain, "
             "and a dog waits under the awning for the bus that brings its owner back at six.")

    def detect(t: str) -> dict:
        req = urllib.request.Request(url + "/watermark/detect", data=json.dumps({"text": t}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    out, ref = detect(text), detect(human)
    keys = ("tokens_scored", "z_score", "p_value", "watermarked")
    return {"served_output": {k: out[k] for k in keys}, "human_text": {k: ref[k] for k in keys}}
