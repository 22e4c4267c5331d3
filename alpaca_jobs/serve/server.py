"""``alpaca-jobs serve``: configuration from flags and the environment, then uvicorn.

Secrets come only from the environment or files, never flags: API keys from
``ALPACA_JOBS_API_KEYS`` (comma-separated) or ``--api-key-file``; the watermark key from
``ALPACA_JOBS_WATERMARK_KEY`` or ``--watermark-key-file``. Without a watermark key the server
uses a public default and says so: anyone can then detect (and forge) its watermark.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from alpaca_jobs.common.errors import UserError

DEFAULT_WATERMARK_KEY = "alpaca-jobs-public-default-watermark-key"
log = logging.getLogger(__name__)


def api_keys(key_file: str | None) -> list[str]:
    keys = [k.strip() for k in os.environ.get("ALPACA_JOBS_API_KEYS", "").split(",") if k.strip()]
    if key_file:
        try:
            keys += [k.strip() for k in Path(key_file).read_text().splitlines() if k.strip()]
        except OSError as exc:
            raise UserError(f"--api-key-file {key_file}: {exc.strerror}") from None
    return keys


def watermark_key(key_file: str | None) -> tuple[str, bool]:
    """(key, is_public_default)."""
    if key_file:
        try:
            return Path(key_file).read_text().strip(), False
        except OSError as exc:
            raise UserError(f"--watermark-key-file {key_file}: {exc.strerror}") from None
    key = os.environ.get("ALPACA_JOBS_WATERMARK_KEY", "")
    return (key, False) if key else (DEFAULT_WATERMARK_KEY, True)


def resolve_model(model: str | None) -> Path:
    from alpaca_jobs.train.models import resolve_base_model

    if model is None:
        return resolve_base_model("preset:smollm2-135m")
    if model.startswith("preset:"):
        return resolve_base_model(model, "seeds/seed_tasks.jsonl")
    path = Path(model)
    if not (path / "config.json").is_file():
        raise UserError(f"--model {model}: not a model directory (no config.json); give a trained run's "
                        "model/ directory, or leave --model out for SmolLM2-135M-Instruct")
    return path


def build_state(model: str | None, gamma: float, delta: float, key_file: str | None, api_key_file: str | None,
                flags_db: str, max_queue: int, allow_unwatermarked: bool, z_threshold: float | None = None,
                max_body_bytes: int | None = None):
    """The server's state. z_threshold and max_body_bytes default to ServeConfig's defaults."""
    from alpaca_jobs.serve.app import ServeState
    from alpaca_jobs.serve.config import ServeConfig
    from alpaca_jobs.serve.engine import Engine
    from alpaca_jobs.serve.flags import FlagStore
    from alpaca_jobs.serve.watermark import WatermarkConfig

    defaults = ServeConfig()

    key, public = watermark_key(key_file)
    if public:
        log.warning("watermark key: the public default (set ALPACA_JOBS_WATERMARK_KEY to keep it secret)")
    try:
        wm = WatermarkConfig(key=key, gamma=gamma, delta=delta, z_threshold=z_threshold or defaults.watermark_z_threshold)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    path = resolve_model(model)
    engine = Engine(path, wm, max_queue=max_queue, name=path.name)
    return ServeState(engine, FlagStore(Path(flags_db)), api_keys(api_key_file), allow_unwatermarked,
                      max_body_bytes=max_body_bytes or defaults.max_body_bytes)
