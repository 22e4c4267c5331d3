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
        spend = gen.spend()
        return {"api": spend, "api_cost_usd": spend["spend_bound_usd"],
                "results": {"kept": len(gen.kept), "rejected": dict(gen.reasons),
                            "responses": gen.responses, "failed_requests": gen.ledger.failed_requests}}

    try:
        out = gen.run()
        if out.status == "failed":  # every reply that arrived is logged; one request failed for good
            raise gen.failure
    except BaseException:
        job.partial.update(progress())
        raise
    log = logging.getLogger(__name__)
    log.info("%s: kept %d, rejected %d %s; %d replies (%d unparseable); API $%.4f",
             out.stop_reason, out.kept, sum(out.rejected.values()), out.rejected, out.responses,
             out.unparseable_responses, out.spend["cost_usd"])
    if out.spend["unsettled_usd"]:
        log.warning("up to $%.4f more may have been billed for attempts whose reply never arrived",
                    out.spend["unsettled_usd"])
    log.info("training data: %s", out.data_file)
    # api_cost_usd counts what may have been billed unseen too: never less than the bill.
    return Outcome(out.status, {"api": out.spend, "api_cost_usd": out.spend["spend_bound_usd"],
                                "results": out.results()})
