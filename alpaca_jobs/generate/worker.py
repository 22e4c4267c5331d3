"""The generate kind's body: self-instruct generation until the target or the budget.

SIGTERM (cancel, preemption) and SIGUSR2 (Slurm's time-limit warning) stop new requests;
replies already received are logged and the outputs written, and the same run id resumes.
"""

from __future__ import annotations

import logging
from typing import Any


def generate_body(job) -> Any:
    from alpaca_jobs.generate.run import Generation
    from alpaca_jobs.job import Outcome

    gen = Generation(job.spec.generate, job.run_dir, job.stop)

    def progress() -> dict[str, Any]:  # what the record says if the run fails from here on
        return {"api": gen.client.spend.as_dict(),
                "results": {"kept": len(gen.kept), "rejected": dict(gen.reasons), "responses": gen.responses}}

    try:
        out = gen.run()
    except BaseException:
        job.partial.update(progress())
        raise
    log = logging.getLogger(__name__)
    log.info("%s: kept %d, rejected %d %s; %d replies (%d unparseable); API $%.4f",
             out.stop_reason, out.kept, sum(out.rejected.values()), out.rejected, out.responses,
             out.unparseable_responses, out.spend["cost_usd"])
    log.info("training data: %s", out.data_file)
    return Outcome(out.status, {"api": out.spend, "results": out.results()})
