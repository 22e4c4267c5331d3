"""The serve section of a job spec. Imports no torch."""

from __future__ import annotations

from pydantic import Field

from alpaca_jobs.common.config import Section


class ServeConfig(Section):
    """The serve job. Secrets (API keys, the watermark key) come from the environment only:
    ALPACA_JOBS_API_KEYS, ALPACA_JOBS_WATERMARK_KEY (on Kubernetes via k8s.secret_env)."""

    model: str | None = Field(None, description="a model directory; default: SmolLM2-135M-Instruct")
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    max_queue: int = Field(16, ge=1)
    watermark_gamma: float = Field(0.25, gt=0, lt=1)
    watermark_delta: float = Field(2.0, ge=0)
    watermark_z_threshold: float = Field(4.0, gt=0, le=100, description="z at which detection says "
                                         "watermarked (4.0 as Kirchenbauer et al.)")
    allow_unwatermarked: bool = False
    flags_db: str = "runs/flags.sqlite3"
    max_body_bytes: int = Field(1_000_000, ge=1024, le=1_000_000_000,
                                description="request bodies over this get 413, refused while reading")
