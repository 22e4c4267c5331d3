"""Local backend: submitit's LocalExecutor, one task per worker process, on this machine.

The same submission path as Slurm (submitit, one task per process, torch.distributed env from
submitit's job environment), so a job that runs here runs there. Cancelling sends SIGTERM to
submitit's controller, which forwards it to the workers: they checkpoint and stop, and a
later ``submit --run-id <same id>`` resumes.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alpaca_jobs.backends.base import (
    HANDLE_FILE,
    Backend,
    Capabilities,
    HandleError,
    JobHandle,
    PayloadSubmission,
)
from alpaca_jobs.backends.naming import translate
from alpaca_jobs.backends.states import State, record_state
from alpaca_jobs.common import kinds
from alpaca_jobs.job import Payload
from alpaca_jobs.launch import RankSource, plan_launch
from alpaca_jobs.ops.record import RecordError, load_record
from alpaca_jobs.spec import LoadedSpec

RUN_PAYLOAD = "alpaca_jobs.runtime:run_payload"  # what submitit runs, for every kind


@dataclass(frozen=True)
class LocalSubmission(PayloadSubmission):
    executor: dict[str, Any]  # submitit.LocalExecutor's parameters


class LocalBackend(Backend):
    name = "local"
    capabilities = Capabilities(reachable=True, attached=True)

    def render(self, loaded: LoadedSpec, run_id: str, after: list[str] | None = None) -> LocalSubmission:
        self._no_dependencies(after)
        spec = loaded.spec
        run_dir = (Path(spec.runs_dir) / run_id).resolve()
        if spec.resources.nodes != 1:
            from alpaca_jobs.common.errors import UserError

            raise UserError(f"{loaded.path}: resources.nodes is {spec.resources.nodes}; "
                            "the local backend runs on this one machine (use CLUSTER=slurm)")
        params = translate(self.name, spec)
        # submitit starts one task per process, as srun does: ranks from its job environment
        launch = plan_launch(loaded, RankSource.SCHEDULER_TASKS, env_hook="alpaca_jobs.backends.hooks:submitit_env")
        payload = Payload.build(loaded, run_id, self.name, run_dir, launch).to_dict()
        text = yaml.safe_dump(
            {
                "backend": self.name,
                "executor": "submitit.LocalExecutor",
                "folder": str(run_dir / "submitit"),
                "parameters": params,
                "function": f"{RUN_PAYLOAD} ({kinds.get(spec.job).body})",
                "payload": payload,
            },
            sort_keys=False,
        )
        return LocalSubmission(self.name, run_id, run_dir, text, payload, params)

    def preflight(self, loaded: LoadedSpec) -> None:
        if loaded.spec.resources.gpus_per_node:
            import shutil

            if shutil.which("nvidia-smi") is None:
                from alpaca_jobs.common.errors import UserError

                raise UserError(
                    f"{loaded.path}: resources.gpus_per_node is {loaded.spec.resources.gpus_per_node} "
                    "but this machine has no NVIDIA GPU; use a CPU spec (jobs/train-local.yaml) "
                    "or CLUSTER=slurm/k8s"
                )
        self.check_inputs(loaded)

    def check_inputs(self, loaded: LoadedSpec) -> None:
        kinds.preflight(loaded)  # everything a local job reads is on this machine

    def submit(self, sub: LocalSubmission) -> JobHandle:
        import submitit

        sub.run_dir.mkdir(parents=True, exist_ok=True)
        executor = submitit.LocalExecutor(folder=sub.run_dir / "submitit")
        executor.update_parameters(**sub.executor)
        from alpaca_jobs.runtime import run_payload

        with _detached(sub.run_dir / "submitit" / "controller.log"):
            job = executor.submit(run_payload, sub.payload)
        logs = [str(job.paths.stdout).replace("%t", "0"), str(job.paths.stderr).replace("%t", "0")]
        handle = JobHandle(sub.run_id, self.name, str(job.job_id), str(sub.run_dir), logs,
                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           ranks=int(sub.executor.get("tasks_per_node", 1)))
        handle.save()
        return handle

    def status(self, handle: JobHandle) -> State:
        """Running while its controller process lives; then what its run record says (a
        process that died before writing one: FAILED, and its log says why; a record that
        cannot be read: UNKNOWN, and ``load_record`` says why)."""
        if _alive(_pid(handle)):
            return State.RUNNING
        try:
            rec = load_record(Path(handle.run_dir))
        except RecordError:
            return State.UNKNOWN
        return State.FAILED if rec is None else record_state(rec.status)

    def cancel(self, handle: JobHandle) -> str:
        pid = _pid(handle)
        if not _alive(pid):
            return f"{handle.run_id} is gone (no process {pid}); nothing to cancel"
        os.kill(pid, signal.SIGTERM)  # the controller forwards it to every worker
        return (f"SIGTERM sent to {handle.run_id} (process {pid}): its workers checkpoint, then stop; "
                f"`alpaca-jobs submit SPEC --run-id {handle.run_id}` resumes it")


def _pid(handle: JobHandle) -> int:
    """A local run's job id: its controller's process id."""
    try:
        return int(handle.job_id)
    except ValueError:
        raise HandleError(f"{Path(handle.run_dir) / HANDLE_FILE}: job_id: {handle.job_id!r} is not a process id "
                          "(a local run's job id is its controller's pid); restore the file") from None


@contextmanager
def _detached(log_path: Path):
    """Spawn submitit's controller detached from this terminal: its output goes to a file (so
    a caller reading our stdout is not held open until the job ends) and it ignores SIGINT (so
    Ctrl-C while following a run stops following, not the run; `cancel` sends SIGTERM)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    saved = [os.dup(1), os.dup(2)]
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with open(log_path, "ab") as fh:
            os.dup2(fh.fileno(), 1)
            os.dup2(fh.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        signal.signal(signal.SIGINT, old_int)


def _alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) submitit controller process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return b"submitit" in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"
