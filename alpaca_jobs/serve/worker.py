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

    from alpaca_jobs.serve.app import create_app
    from alpaca_jobs.serve.server import build_state
    from alpaca_jobs.spec import LoadedSpec

    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.time()
    loaded = LoadedSpec.from_payload(payload)
    cfg = loaded.spec.serve
    state = build_state(cfg.model, cfg.watermark_gamma, cfg.watermark_delta, None, None, cfg.flags_db,
                        cfg.max_queue, cfg.allow_unwatermarked)
    logging.getLogger(__name__).info("serving %s on %s:%d", state.engine.name, cfg.host, cfg.port)
    uvicorn.run(create_app(state), host=cfg.host, port=cfg.port, log_level="info", access_log=False)
    return _record(payload, loaded, time.time() - t0, started)


def _record(payload, loaded, wall: float, started: str) -> dict[str, Any]:
    import resource
    from dataclasses import asdict

    from alpaca_jobs.ops.prices import gpu_price
    from alpaca_jobs.ops.records import RunRecord, Usage, cost_fields

    spec, res = loaded.spec, loaded.spec.resources
    price = gpu_price(res.gpu_type if res.gpus_per_node else None, spec.cost.gpu_hour_usd)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    usage = Usage(1, wall, ru.ru_utime + ru.ru_stime)
    rec = RunRecord(run_id=payload["run_id"], job="serve", backend=payload["backend"], status="stopped",
                    nodes=res.nodes, gpus_per_node=res.gpus_per_node, gpu_type=res.gpu_type, processes=1,
                    price_per_gpu_hour_usd=price.usd_per_gpu_hour, price_source=price.source,
                    cpu_core_hour_usd=spec.cost.cpu_core_hour_usd,
                    **cost_fields(usage, res.nodes, res.gpus_per_node, price.usd_per_gpu_hour,
                                  spec.cost.cpu_core_hour_usd, spec.cost.target_usd),
                    started_at=started, finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    run_dir = Path(payload["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    rec.write(run_dir)
    return asdict(rec)


def main(argv: list[str] | None = None) -> int:
    """``python -m alpaca_jobs.serve.worker --payload FILE`` (Kubernetes, plain sbatch)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="alpaca_jobs.serve.worker")
    ap.add_argument("--payload", required=True)
    args = ap.parse_args(argv)
    serve_job(json.loads(Path(args.payload).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
