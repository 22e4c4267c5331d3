"""The serve kind's body: the server runs until stopped (SIGTERM: uvicorn shuts down
gracefully); the runtime then writes the run record with its wall time, GPU-hours and cost."""

from __future__ import annotations

import logging
from typing import Any


def serve_body(job) -> Any:
    import uvicorn

    from alpaca_jobs.job import Outcome
    from alpaca_jobs.ops.metrics import RecordCollector
    from alpaca_jobs.serve.app import create_app
    from alpaca_jobs.serve.server import build_state

    cfg = job.spec.serve
    state = build_state(cfg)
    # alpaca_job_* on /metrics: the job's own GPU-seconds and cost, as they stand at each scrape
    state.collectors.append(RecordCollector(lambda: job.record("running")))
    logging.getLogger(__name__).info("serving %s on %s:%d", state.engine.name, cfg.host, cfg.port)
    uvicorn.run(create_app(state), host=cfg.host, port=cfg.port, log_level="info", access_log=False)
    return Outcome("stopped")
