"""Entry point of the serve job on a backend (submitit task, or a Kubernetes container).

Runs the server until it is stopped (SIGTERM: uvicorn shuts down gracefully), then writes a
run record with the job's own wall time, GPU-hours and cost.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any


def serve_job(payload: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from alpaca_jobs.ops.metrics import live_collector
    from alpaca_jobs.serve.app import create_app
    from alpaca_jobs.serve.server import build_state
    from alpaca_jobs.spec import LoadedSpec

    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.monotonic()
    loaded = LoadedSpec.from_payload(payload)
    cfg = loaded.spec.serve
    state = build_state(cfg.model, cfg.watermark_gamma, cfg.watermark_delta, None, None, cfg.flags_db,
                        cfg.max_queue, cfg.allow_unwatermarked, cfg.watermark_z_threshold, cfg.max_body_bytes)
    state.collectors.append(live_collector(payload, loaded, started, t0))  # alpaca_job_* on /metrics
    logging.getLogger(__name__).info("serving %s on %s:%d", state.engine.name, cfg.host, cfg.port)
    uvicorn.run(create_app(state), host=cfg.host, port=cfg.port, log_level="info", access_log=False)
    return _record(payload, loaded, t0, started)


def _record(payload, loaded, t0: float, started: str) -> dict[str, Any]:
    from alpaca_jobs.ops.records import build_record, own_usage, publish

    rec = build_record(payload, loaded, "stopped", own_usage(t0), started)
    return publish(rec, Path(payload["run_dir"]))


def main(argv: list[str] | None = None) -> int:
    """``python -m alpaca_jobs.serve.worker --payload FILE`` (Kubernetes, plain sbatch)."""
    from alpaca_jobs.kinds import payload_main

    return payload_main("serve", argv)


if __name__ == "__main__":
    sys.exit(main())
