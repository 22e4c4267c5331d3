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
from alpaca_jobs.serve.config import ServeConfig

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


def build_state(cfg: ServeConfig, key_file: str | None = None, api_key_file: str | None = None):
    """The server's state from the serve section; the secrets from ``key_file`` (the watermark
    key) and ``api_key_file``, else the environment (never from the spec)."""
    from alpaca_jobs.model_dirs import resolve_model
    from alpaca_jobs.serve.app import ServeState
    from alpaca_jobs.serve.engine import Engine
    from alpaca_jobs.serve.flags import FlagStore
    from alpaca_jobs.serve.watermark import WatermarkConfig

    key, public = watermark_key(key_file)
    if public:
        log.warning("watermark key: the public default (set ALPACA_JOBS_WATERMARK_KEY to keep it secret)")
    try:
        wm = WatermarkConfig(key=key, gamma=cfg.watermark_gamma, delta=cfg.watermark_delta,
                             z_threshold=cfg.watermark_z_threshold)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    path = resolve_model(cfg.model)
    engine = Engine(path, wm, max_queue=cfg.max_queue, name=path.name)
    return ServeState(engine, FlagStore(Path(cfg.flags_db)), api_keys(api_key_file), cfg.allow_unwatermarked,
                      max_body_bytes=cfg.max_body_bytes)
