"""Entry point of the generate job on a backend (submitit task, or a Kubernetes container).

SIGTERM (cancel, preemption) and SIGUSR2 (Slurm's time-limit warning) stop new requests;
replies already received are logged and the outputs written, and the same run id resumes.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from alpaca_jobs.errors import UserError


def generate_job(payload: dict[str, Any]) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from alpaca_jobs.generate.run import Generation
    from alpaca_jobs.ops.records import build_record, own_usage, publish
    from alpaca_jobs.spec import LoadedSpec
    from alpaca_jobs.train.signals import StopFlag

    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.monotonic()
    loaded = LoadedSpec.from_payload(payload)
    run_dir = Path(payload["run_dir"])
    stop = StopFlag().install()
    gen = None
    try:
        gen = Generation(loaded.spec.generate, run_dir, stop)
        out = gen.run()
        if out.status == "failed":  # every reply that arrived is logged; one request failed for good
            raise gen.failure
    except Exception as exc:
        error = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        extra = {}
        if gen is not None:
            spend = gen.spend()
            extra = {"api": spend, "api_cost_usd": spend["spend_bound_usd"],
                     "results": {"kept": len(gen.kept), "rejected": dict(gen.reasons),
                                 "responses": gen.responses,
                                 "failed_requests": gen.ledger.failed_requests}}
        publish(build_record(payload, loaded, "failed", own_usage(t0), started, error=error, **extra),
                run_dir)
        raise
    finally:
        stop.restore()
    log = logging.getLogger(__name__)
    log.info("%s: kept %d, rejected %d %s; %d replies (%d unparseable); API $%.4f",
             out.stop_reason, out.kept, sum(out.rejected.values()), out.rejected, out.responses,
             out.unparseable_responses, out.spend["cost_usd"])
    if out.spend["unsettled_usd"]:
        log.warning("up to $%.4f more may have been billed for attempts whose reply never arrived",
                    out.spend["unsettled_usd"])
    log.info("training data: %s", out.data_file)
    # api_cost_usd counts what may have been billed unseen too: never less than the bill.
    rec = build_record(payload, loaded, out.status, own_usage(t0), started, api=out.spend,
                       api_cost_usd=out.spend["spend_bound_usd"], results=out.results())
    return publish(rec, run_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m alpaca_jobs.generate.worker --payload FILE`` (Kubernetes, plain sbatch)."""
    from alpaca_jobs.kinds import payload_main

    return payload_main("generate", argv)


if __name__ == "__main__":
    sys.exit(main())
