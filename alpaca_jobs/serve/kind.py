"""The serve kind: an OpenAI-compatible server with moderation, watermarking and flags. It
runs until cancelled."""

from __future__ import annotations

from typing import Any

from alpaca_jobs.common.kinds import Kind, Service, Visible


def preflight(loaded: Any, visible: Visible) -> None:
    model = loaded.spec.serve.model
    if not model or not visible(model):
        return
    if model.startswith("preset:"):
        from alpaca_jobs.common.presets import check_base_model

        check_base_model(model)
    else:
        from alpaca_jobs.serve.server import resolve_model

        resolve_model(model)


def _watermark_check(url: str, model: str) -> Any:
    from alpaca_jobs.serve.check import watermark_check

    return watermark_check(url, model)


KIND = Kind(name="serve", body="alpaca_jobs.serve.worker:serve_body",
            config="alpaca_jobs.serve.config:ServeConfig", node_imports="alpaca_jobs, torch",
            preflight=preflight,
            service=Service(port=lambda spec: spec.serve.port, check=("watermark", _watermark_check)))
