"""Slurm backend: submitit's SlurmExecutor, one task per worker process (one per GPU).

What ``--dry-run`` prints is the sbatch script submitit itself writes for this submission.
Requeue: on SIGUSR2 (Slurm's time-limit warning, ``--signal=USR2@<delay>``) workers
checkpoint and rank 0 runs ``scontrol requeue``; the requeued job resumes from the
checkpoint. On SIGTERM (``scancel``, or preemption, after which Slurm requeues by itself
when PreemptMode=REQUEUE) workers checkpoint and exit. GPU-hours are also read back from
the scheduler (``sacct`` AllocTRES gres/gpu x ElapsedRaw, every attempt) into the record.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from alpaca_jobs.backends.base import ACTIVE_STATES, Backend, Capabilities, JobHandle, Submission
from alpaca_jobs.backends.naming import translate
from alpaca_jobs.common import kinds
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.job import Payload
from alpaca_jobs.runtime import run_payload
from alpaca_jobs.spec import JobSpec, LoadedSpec

SIGNAL_DELAY_S = 120  # USR2 this long before the time limit: time to write a checkpoint


def executor_params(spec: JobSpec) -> dict[str, Any]:
    """submitit SlurmExecutor parameters: the naming table plus the site's Slurm config."""
    site = spec.slurm
    params = translate("slurm", spec)
    gpus = spec.resources.gpus_per_node
    if gpus and spec.resources.gpu_type in site.gres_types:
        del params["gpus_per_node"]
        params["gres"] = f"gpu:{site.gres_types[spec.resources.gpu_type]}:{gpus}"
    elif not gpus:
        del params["gpus_per_node"]
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(site, key):
            params[key] = getattr(site, key)
    if site.exclusive:
        params["exclusive"] = True
    setup = list(site.setup)
    if site.textfile_dir:
        import shlex

        setup.append(f"export ALPACA_JOBS_TEXTFILE_DIR={shlex.quote(site.textfile_dir)}")
    if setup:
        params["setup"] = setup
    params["signal_delay_s"] = SIGNAL_DELAY_S
    params["additional_parameters"] = {"requeue": True, **site.extra_sbatch}
    if site.container.runtime == "pyxis":
        c = site.container
        args = ["--container-image", c.image]
        if c.workdir:
            args += ["--container-workdir", c.workdir]
        if c.mounts:
            args += ["--container-mounts", ",".join(c.mounts)]
        params["srun_args"] = args
    return params


def node_python(spec: JobSpec, default: str | None = None) -> str:
    """The interpreter command on the compute nodes, container included."""
    c = spec.slurm.container
    if c.runtime == "pyxis":
        return c.python
    if c.runtime == "apptainer":
        binds = "".join(f" --bind {shlex.quote(m)}" for m in c.mounts)
        return f"apptainer exec --nv{binds} {shlex.quote(c.image)} {c.python}"
    return spec.slurm.python or default or sys.executable


def standalone_script(loaded: LoadedSpec, spec_arg: str) -> str:
    """A self-contained sbatch script for `sbatch slurm/<job>.sbatch` (no submitit pickle):
    the same #SBATCH lines as a submitit submission, running the worker on the spec file."""
    from submitit.slurm.slurm import _make_sbatch_string

    spec = loaded.spec
    if not kinds.get(spec.job).per_gpu:
        raise UserError(f"{spec_arg}: standalone sbatch scripts are rendered for train jobs; "
                        f"submit a {spec.job} job with `alpaca-jobs submit --cluster slurm`")
    logs = f"{spec.runs_dir}/slurm-logs"
    params = executor_params(spec)
    params["setup"] = [
        f'RUN_DIR="${{ALPACA_JOBS_RUN_DIR:-{spec.runs_dir}/{spec.name}-$SLURM_JOB_ID}}"',
        "export HF_HUB_OFFLINE=1",
        *params.get("setup", []),
    ]
    command = (f'{node_python(spec, default="python3")} -u -m alpaca_jobs.runtime --spec {spec_arg} '
               f'--run-dir "$RUN_DIR" --backend slurm')
    body = _make_sbatch_string(command=command, folder=logs, **params)
    if not Path(logs).is_absolute():  # submitit made it absolute; keep it relative to the submit dir
        body = body.replace(str(Path(logs).absolute()), logs)
    head, _, rest = body.partition("\n")
    note = (f"# Generated from {spec_arg} by `make render`; edit the spec, not this file.\n"
            f"# Submit from the repository root: mkdir -p {logs} && sbatch {{this file}}\n"
            f"# (ALPACA_JOBS_RUN_DIR=... chooses the run directory; a requeued job resumes in it.)")
    return f"{head}\n{note}\n{rest}\n"


def _run_dir(spec: JobSpec, run_id: str) -> Path:
    return (Path(spec.runs_dir) / run_id).absolute()


class SlurmBackend(Backend):
    name = "slurm"
    capabilities = Capabilities(dependencies=True)

    def _executor(self, loaded: LoadedSpec, folder: Path):
        import submitit

        ex = submitit.SlurmExecutor(folder=folder, python=node_python(loaded.spec))
        ex.update_parameters(**executor_params(loaded.spec))
        return ex

    def render(self, loaded: LoadedSpec, run_id: str, after: list[str] | None = None) -> Submission:
        run_dir = _run_dir(loaded.spec, run_id)
        folder = run_dir / "submitit"
        ex = self._executor(loaded, folder)
        text = ex._make_submission_file_text(ex._submitit_command_str, "dry-run")
        payload = Payload.build(loaded, run_id, self.name, run_dir).to_dict()
        header = (f"# run {run_id}: {kinds.get(loaded.spec.job).body} pickled into {folder}\n")
        params = {**executor_params(loaded.spec), **({"after": list(after)} if after else {})}
        return Submission(self.name, run_id, run_dir, payload, params, header + text + "\n")

    def render_plain(self, loaded: LoadedSpec, spec_arg: str) -> str:
        return standalone_script(loaded, spec_arg)

    def preflight(self, loaded: LoadedSpec) -> None:
        self.check_inputs(loaded)  # paths on the cluster's shared storage: those visible here
        check_cluster(loaded)

    def submit(self, sub: Submission) -> JobHandle:
        loaded = LoadedSpec.from_payload(sub.payload)
        sub.run_dir.mkdir(parents=True, exist_ok=True)
        ex = self._executor(loaded, sub.run_dir / "submitit")
        if sub.params.get("after"):  # a pipeline stage: start only when the previous succeeded
            extra = dict(ex.parameters.get("additional_parameters") or {})
            extra.update(dependency="afterok:" + ":".join(sub.params["after"]), kill_on_invalid_dep="yes")
            ex.update_parameters(additional_parameters=extra)
        try:
            job = ex.submit(run_payload, sub.payload)
        except Exception as exc:  # sbatch said no: show its words
            raise UserError(f"sbatch refused the job: {str(exc).strip()[-800:]}") from None
        logs = [str(sub.run_dir / "submitit" / f"{job.job_id}_0_log.out"),
                str(sub.run_dir / "submitit" / f"{job.job_id}_0_log.err")]
        handle = JobHandle(sub.run_id, self.name, str(job.job_id), str(sub.run_dir), logs,
                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        handle.save()
        return handle

    def submit_many(self, subs: list[Submission]) -> list[JobHandle]:
        """A sweep is one Slurm job array (runs must share resources, so one sbatch fits all)."""
        if len(subs) == 1:
            return [self.submit(subs[0])]
        loaded = [LoadedSpec.from_payload(s.payload) for s in subs]
        if len({json.dumps(executor_params(x.spec), sort_keys=True) for x in loaded}) != 1:
            raise UserError("--sweep: the runs would need different Slurm resources; "
                            "sweep hyperparameters, not resources")
        folder = subs[0].run_dir.parent / f"{subs[0].run_id.rsplit('-', 1)[0]}-array" / "submitit"
        ex = self._executor(loaded[0], folder)
        for sub in subs:
            sub.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            jobs = ex.map_array(run_payload, [s.payload for s in subs])
        except Exception as exc:
            raise UserError(f"sbatch refused the job array: {str(exc).strip()[-800:]}") from None
        handles = []
        for sub, job in zip(subs, jobs, strict=True):
            logs = [str(folder / f"{job.job_id}_0_log.out"), str(folder / f"{job.job_id}_0_log.err")]
            h = JobHandle(sub.run_id, self.name, str(job.job_id), str(sub.run_dir), logs,
                          time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            h.save()
            handles.append(h)
        return handles

    def status(self, handle: JobHandle) -> str:
        rows = sacct(handle.job_id)
        if not rows:
            return "PENDING"  # accounting has not seen it yet
        state = rows[-1]["State"].split()[0]
        return "CANCELLED" if state.startswith("CANCELLED") else state

    def cancel(self, handle: JobHandle) -> None:
        subprocess.run(["scancel", handle.job_id], check=True, capture_output=True, timeout=60)

    def finalize(self, handle: JobHandle) -> None:
        """Add the scheduler's own GPU-hours to the run record, once the job has ended."""
        from alpaca_jobs.ops.records import add_scheduler_usage

        rows = sacct(handle.job_id, all_attempts=True)
        if rows and rows[-1]["State"].split()[0] not in ACTIVE_STATES:
            add_scheduler_usage(Path(handle.run_dir), scheduler_usage(rows))


def sacct(job_id: str, all_attempts: bool = False) -> list[dict[str, str]]:
    """The job's allocation rows (-X), one per attempt with -D."""
    cmd = ["sacct", "-j", job_id, "-X", "-n", "--parsable2",
           "--format=JobID,State,ElapsedRaw,AllocTRES,ExitCode"] + (["-D"] if all_attempts else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise UserError(f"sacct failed: {out.stderr.strip()} (is slurmdbd accounting configured?)")
    keys = ["JobID", "State", "ElapsedRaw", "AllocTRES", "ExitCode"]
    return [dict(zip(keys, line.split("|"), strict=False)) for line in out.stdout.splitlines() if line.strip()]


def scheduler_usage(rows: list[dict[str, str]]) -> dict[str, Any]:
    """GPU-seconds as the scheduler bills them: sum over attempts of ElapsedRaw x gres/gpu."""
    gpu_seconds = elapsed = 0
    gpus = 0
    for r in rows:
        tres = dict(t.split("=", 1) for t in r["AllocTRES"].split(",") if "=" in t)
        gpus = int(tres.get("gres/gpu", 0))
        elapsed += int(r["ElapsedRaw"] or 0)
        gpu_seconds += int(r["ElapsedRaw"] or 0) * gpus
    return {"source": "sacct AllocTRES gres/gpu x ElapsedRaw", "attempts": len(rows),
            "elapsed_seconds": elapsed, "gpus": gpus, "gpu_seconds": gpu_seconds,
            "gpu_hours": round(gpu_seconds / 3600, 6)}


def check_cluster(loaded: LoadedSpec) -> None:
    """Fail before submitting when the cluster cannot run the job (names the field)."""
    spec = loaded.spec
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R|%G"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError("CLUSTER=slurm: no `sinfo` on this machine; submit from a Slurm login node") from None
    if out.returncode:
        raise UserError(f"CLUSTER=slurm: sinfo failed: {out.stderr.strip()}")
    parts: dict[str, int] = {}
    for line in out.stdout.splitlines():
        name, _, gres = line.partition("|")
        gpus = sum(int(g.split(":")[-1].split("(")[0]) for g in gres.split(",") if g.startswith("gpu"))
        parts[name] = max(parts.get(name, 0), gpus)
    want = spec.slurm.partition
    if want and want not in parts:
        raise UserError(f"{loaded.path}: slurm.partition: unknown partition {want!r}; "
                        f"this cluster has: {', '.join(sorted(parts))}")
    scope = {want: parts[want]} if want else parts
    most = max(scope.values(), default=0)
    if spec.resources.gpus_per_node > most:
        where = f"partition {want}" if want else "any partition"
        raise UserError(f"{loaded.path}: resources.gpus_per_node: {spec.resources.gpus_per_node} GPUs per "
                        f"node asked, but the largest node in {where} has {most}")
