"""Slurm backend: our own sbatch script, sent as it is rendered.

``render`` is a pure function of (spec, run id, the job ids it waits on): the #SBATCH lines
from the spec's resources and site settings, then one ``srun`` that starts one worker process
per task (``python -m alpaca_jobs.runtime --payload RUN_DIR/payload.json``). ``submit`` writes
that text to ``RUN_DIR/job.sbatch`` and runs ``sbatch --parsable`` on it: what ``--dry-run``
prints is byte for byte what Slurm stores. Workers read their rank and world size from Slurm's
environment through submitit's public ``helpers.TorchDistributedEnvironment``
(``SUBMITIT_EXECUTOR=slurm`` selects its Slurm environment).

Requeue: on SIGUSR2 (Slurm's time-limit warning, ``--signal=USR2@<delay>``) workers
checkpoint and rank 0 runs ``scontrol requeue``; the requeued job resumes from the
checkpoint. When a task dies (``srun --kill-on-bad-exit`` then stops the rest: never half a
job) and no worker reported an error of its own, the batch script requeues the job, which
resumes from its last checkpoint (at most ``slurm.max_requeues`` times in all). On SIGTERM (``scancel``, or preemption, after which Slurm requeues by itself
when PreemptMode=REQUEUE) workers checkpoint and exit. GPU-hours are also read back from
the scheduler (``sacct`` AllocTRES gres/gpu x ElapsedRaw, every attempt) into the record.
"""

from __future__ import annotations

import functools
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from alpaca_jobs.backends.base import Backend, Capabilities, JobHandle, PayloadSubmission
from alpaca_jobs.backends.naming import translate
from alpaca_jobs.backends.states import State, slurm_state
from alpaca_jobs.common import kinds
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.failures import NO_RETRY
from alpaca_jobs.common.files import atomic_write
from alpaca_jobs.job import Payload
from alpaca_jobs.launch import Launch, RankSource, plan_launch
from alpaca_jobs.spec import JobSpec, LoadedSpec

SIGNAL_DELAY_S = 120  # USR2 this long before the time limit: time to write a checkpoint
SCRIPT = "job.sbatch"  # the submitted script, in the run directory
PAYLOAD = "payload.json"
RANK_LOG = "logs/rank_%t_log"  # + .out/.err under the run directory; %t: the task's rank


def sbatch_options(spec: JobSpec) -> dict[str, str | int | bool]:
    """The spec's #SBATCH options (name -> value, True for a flag), site settings included."""
    site = spec.slurm
    params = {k.replace("_", "-"): v for k, v in translate("slurm", spec).items()}
    gpus = params.pop("gpus-per-node")
    if gpus and spec.resources.gpu_type in site.gres_types:
        params["gres"] = f"gpu:{site.gres_types[spec.resources.gpu_type]}:{gpus}"
    elif gpus:
        params["gpus-per-node"] = gpus
    opts: dict[str, str | int | bool] = {**params, "exclusive": site.exclusive}
    for key in ("partition", "account", "qos", "constraint"):
        opts[key] = getattr(site, key) or False
    opts.update({"signal": f"USR2@{SIGNAL_DELAY_S}", "requeue": True, "open-mode": "append"})
    for key, value in site.extra_sbatch.items():
        opts[key.replace("_", "-")] = value
    return {k: v for k, v in opts.items() if v is not False}


def _directive(key: str, value: str | int | bool) -> str:
    text = f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={value}"
    if "\n" in text or "\r" in text:
        raise UserError(f"slurm option {key}: a line break in {value!r}")
    return text


def node_python(spec: JobSpec) -> str:
    """The interpreter command on the compute nodes, container included."""
    c = spec.slurm.container
    if c.runtime == "pyxis":
        return c.python
    if c.runtime == "apptainer":
        binds = "".join(f" --bind {shlex.quote(m)}" for m in c.mounts)
        return f"apptainer exec --nv{binds} {shlex.quote(c.image or '')} {c.python}"
    return spec.slurm.python


def _srun(spec: JobSpec) -> str:
    """srun with one log file per rank (appended to by a requeued attempt), and pyxis's
    container options when the job runs in an image."""
    args = ["srun", "--unbuffered", "--kill-on-bad-exit=1", "--open-mode=append",
            f'--output="$RUN_DIR/{RANK_LOG}.out"', f'--error="$RUN_DIR/{RANK_LOG}.err"']
    c = spec.slurm.container
    if c.runtime == "pyxis":
        args.append(f"--container-image={shlex.quote(c.image or '')}")
        if c.workdir:
            args.append(f"--container-workdir={shlex.quote(c.workdir)}")
        if c.mounts:
            args.append(f"--container-mounts={shlex.quote(','.join(c.mounts))}")
    return " ".join(args)


def sbatch_script(spec: JobSpec, *, run_dir: list[str], launch: str, output: str | None = None,
                  after: list[str] | None = None, array: str | None = None, notes: tuple[str, ...] = ()) -> str:
    """The whole batch script: shebang, notes, #SBATCH lines, then shell lines that set
    RUN_DIR (``run_dir``), the site's setup, and one srun running ``launch``."""
    opts = dict(sbatch_options(spec))
    if output:
        opts["output"] = output
    if array:
        opts["array"] = array
    if after:
        opts["dependency"] = "afterok:" + ":".join(after)
        opts["kill-on-invalid-dep"] = "yes"
    notes = tuple(n.replace("\r", "\\r").replace("\n", "\\n") for n in notes)  # a comment stays one line
    lines = ["#!/bin/bash", *(f"# {n}" for n in notes), *(_directive(k, v) for k, v in opts.items()), "",
             *run_dir, 'mkdir -p "$RUN_DIR/logs"', "export SUBMITIT_EXECUTOR=slurm", *spec.slurm.setup]
    if spec.slurm.textfile_dir:
        lines.append(f"export ALPACA_JOBS_TEXTFILE_DIR={shlex.quote(spec.slurm.textfile_dir)}")
    lines += [f'rm -f "$RUN_DIR/{NO_RETRY}"', f"{_srun(spec)} {node_python(spec)} -u {launch}",
              *_requeue_on_loss(spec.slurm.max_requeues)]
    return "\n".join(lines) + "\n"


def _requeue_on_loss(max_requeues: int) -> list[str]:
    """After srun: when a task died without an error of its own (its node lost, the process
    killed; see common.failures), the whole job runs again and resumes from its checkpoint.
    scancel and the time limit end this shell too, so they requeue nothing here."""
    n = max_requeues
    return ["rc=$?",
            f'if [ "$rc" -ne 0 ] && [ ! -e "$RUN_DIR/{NO_RETRY}" ] && [ "${{SLURM_RESTART_COUNT:-0}}" -lt {n} ]; then',
            '  echo "alpaca-jobs: a task ended without an error of its own (srun exit $rc): requeueing job '
            f'$SLURM_JOB_ID (restart $((${{SLURM_RESTART_COUNT:-0}} + 1)) of at most {n})" >&2',
            '  scontrol requeue "$SLURM_JOB_ID"',
            "fi",
            'exit "$rc"']


def standalone_script(loaded: LoadedSpec, spec_arg: str) -> str:
    """A self-contained sbatch script for `sbatch slurm/<job>.sbatch`: the same #SBATCH lines
    and srun as a submission, running the job runtime on the spec file (one process per GPU)."""
    spec = loaded.spec
    if not kinds.get(spec.job).per_gpu:
        raise UserError(f"{spec_arg}: standalone sbatch scripts are rendered for per-GPU jobs (train); "
                        f"submit a {spec.job} job with `alpaca-jobs submit --cluster slurm`")
    default = _in_double_quotes(f"{spec.runs_dir}/{spec.name}-") + "$SLURM_JOB_ID"
    notes = (f"Generated from {spec_arg} by `make render`; edit the spec, not this file.",
             f"Submit from the repository root ({spec_arg} is read from there). The run directory is",
             f"$ALPACA_JOBS_RUN_DIR, else {spec.runs_dir}/{spec.name}-JOBID; a requeued job resumes in it.",
             "Batch output: %x-%j.out in the submit directory; each rank logs to RUN_DIR/logs/.")
    return sbatch_script(spec, run_dir=[f'RUN_DIR="${{ALPACA_JOBS_RUN_DIR:-{default}}}"'],
                         launch=f'-m alpaca_jobs.runtime --spec {shlex.quote(spec_arg)} --run-dir "$RUN_DIR" '
                                f'--backend slurm --launch {shlex.quote(launch_of(loaded).to_json())}',
                         output="%x-%j.out", notes=notes)


def _in_double_quotes(text: str) -> str:
    """``text`` for the inside of a double-quoted shell word (where single quotes are literal)."""
    return "".join("\\" + c if c in '\\"$`' else c for c in text)


def launch_of(loaded: LoadedSpec) -> Launch:
    """srun starts one task per process on every node; each reads its rank from Slurm's
    variables; rank 0 requeues the job after a time-limit checkpoint."""
    return plan_launch(loaded, RankSource.SCHEDULER_TASKS, max_restarts=loaded.spec.slurm.max_requeues,
                       on_time_limit="alpaca_jobs.backends.hooks:slurm_requeue",
                       env_hook="alpaca_jobs.backends.hooks:submitit_env")


def _run_dir(spec: JobSpec, run_id: str) -> Path:
    return (Path(spec.runs_dir) / run_id).absolute()


def _launch(spec: JobSpec) -> str:
    return f'-m alpaca_jobs.runtime --payload "$RUN_DIR/{PAYLOAD}"'


def render_script(spec: JobSpec, run_id: str, after: list[str] | None = None) -> str:
    """What `submit` sends for one run (pure: no Slurm, no files)."""
    run_dir = _run_dir(spec, run_id)
    return sbatch_script(spec, run_dir=[f"RUN_DIR={shlex.quote(str(run_dir))}"], launch=_launch(spec),
                         output=_sbatch_path(run_dir / "logs" / "batch.out"), after=after)


def array_script(subs: list[PayloadSubmission]) -> str:
    """One job array for several runs with the same resources (a sweep): task i runs subs[i]."""
    spec = LoadedSpec.from_payload(subs[0].payload).spec
    dirs = " ".join(shlex.quote(str(s.run_dir)) for s in subs)
    return sbatch_script(spec, run_dir=[f"RUN_DIRS=({dirs})", 'RUN_DIR="${RUN_DIRS[$SLURM_ARRAY_TASK_ID]}"'],
                         launch=_launch(spec), output=_sbatch_path(_array_dir(subs) / "batch-%a.out"),
                         array=f"0-{len(subs) - 1}")


def _sbatch_path(path: Path) -> str:
    """A path for an #SBATCH line. sbatch splits those lines itself: double quotes group (a
    backslash escapes a quote), an unquoted '#' starts a comment (src/sbatch/opt.c,
    _get_argument). Slurm then expands '%' patterns in file names, in srun's --output too, and
    a line ends at a line break, so those are refused: one line naming runs_dir."""
    text = str(path.parent)
    bad = [c for c in ("\n", "\r", "%", "\\") if c in text]
    if bad:
        raise UserError(f"runs_dir: {text!r} holds {bad[0]!r}, which Slurm's log file names cannot "
                        "carry; use a runs_dir without line breaks, '%' or backslashes")
    plain = str(path)
    if all(c.isalnum() or c in "/._-+,=:@%" for c in plain):
        return plain
    return '"' + plain.replace('"', '\\"') + '"'


def _array_dir(subs: list[PayloadSubmission]) -> Path:
    return subs[0].run_dir.parent / f"{subs[0].run_id.rsplit('-', 1)[0]}-array"


class SlurmBackend(Backend):
    name = "slurm"
    capabilities = Capabilities(dependencies=True)

    def render(self, loaded: LoadedSpec, run_id: str, after: list[str] | None = None) -> PayloadSubmission:
        """The submission of one run; ``after``: Slurm job ids it waits on (afterok)."""
        run_dir = _run_dir(loaded.spec, run_id)
        payload = Payload.build(loaded, run_id, self.name, run_dir, launch_of(loaded)).to_dict()
        return PayloadSubmission(self.name, run_id, run_dir, render_script(loaded.spec, run_id, after), payload)

    def render_plain(self, loaded: LoadedSpec, spec_arg: str) -> str:
        return standalone_script(loaded, spec_arg)

    def preflight(self, loaded: LoadedSpec) -> None:
        self.check_inputs(loaded)  # paths on the cluster's shared storage: those visible here
        check_cluster(loaded)
        check_node_python(loaded)

    def submit(self, sub: PayloadSubmission) -> JobHandle:
        _write_inputs(sub)
        job_id = _sbatch(sub.run_dir / SCRIPT, sub.text)
        return _handle(sub, job_id)

    def submit_many(self, subs: list[PayloadSubmission]) -> list[JobHandle]:
        """A sweep is one Slurm job array (runs must share resources, so one sbatch fits all)."""
        if len(subs) == 1:
            return [self.submit(subs[0])]
        specs = [LoadedSpec.from_payload(s.payload).spec for s in subs]
        if len({json.dumps(sbatch_options(s)) for s in specs}) != 1 or len({s.job for s in specs}) != 1:
            raise UserError("--sweep: the runs would need different Slurm resources; "
                            "sweep hyperparameters, not resources")
        text = array_script(subs)
        for sub in subs:
            _write_inputs(sub)
        folder = _array_dir(subs)
        folder.mkdir(parents=True, exist_ok=True)
        job_id = _sbatch(folder / SCRIPT, text, what="job array")
        return [_handle(sub, f"{job_id}_{i}") for i, sub in enumerate(subs)]

    def status(self, handle: JobHandle) -> State:
        rows = sacct(handle.job_id)
        if not rows:
            return State.PENDING  # accounting has not seen it yet
        return slurm_state(rows[-1]["State"])

    def cancel(self, handle: JobHandle) -> str:
        subprocess.run(["scancel", handle.job_id], check=True, capture_output=True, timeout=60)
        return (f"scancel sent to {handle.run_id} (Slurm job {handle.job_id}): its workers checkpoint, "
                f"then stop; `alpaca-jobs submit SPEC --run-id {handle.run_id}` resumes it")

    def finalize(self, handle: JobHandle) -> None:
        """Add the scheduler's own GPU-hours to the run record, once the job has ended."""
        from alpaca_jobs.ops.records import add_scheduler_usage

        rows = sacct(handle.job_id, all_attempts=True)
        if rows and not slurm_state(rows[-1]["State"]).active:
            add_scheduler_usage(Path(handle.run_dir), scheduler_usage(rows))


def _write_inputs(sub: PayloadSubmission) -> None:
    """What the workers read: the payload, and the directory their logs go to."""
    (sub.run_dir / "logs").mkdir(parents=True, exist_ok=True)
    atomic_write(sub.run_dir / PAYLOAD, json.dumps(sub.payload, indent=1, sort_keys=True))


def _sbatch(path: Path, text: str, what: str = "job") -> str:
    """Submit exactly ``text`` (written to ``path``); the job id."""
    path.write_text(text)
    try:
        out = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise UserError("CLUSTER=slurm: no `sbatch` on this machine; submit from a Slurm login node") from None
    if out.returncode:
        raise UserError(f"sbatch refused the {what}: {out.stderr.strip()[-800:]}")
    return out.stdout.strip().split(";")[0]


def _handle(sub: PayloadSubmission, job_id: str) -> JobHandle:
    logs = [str(sub.run_dir / f"{RANK_LOG.replace('%t', '0')}.{ext}") for ext in ("out", "err")]
    res = LoadedSpec.from_payload(sub.payload).spec.resources
    handle = JobHandle(sub.run_id, "slurm", job_id, str(sub.run_dir), logs,
                       time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       ranks=res.world_size, nodes=res.nodes)
    handle.save()
    return handle


def sacct(job_id: str, all_attempts: bool = False) -> list[dict[str, str]]:
    """The job's allocation rows (-X), one per attempt with -D."""
    cmd = ["sacct", "-j", job_id, "-X", "-n", "--parsable2",
           "--format=JobID,State,ElapsedRaw,AllocTRES,ExitCode,NNodes,NodeList"] + (["-D"] if all_attempts else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise UserError(f"sacct failed: {out.stderr.strip()} (is slurmdbd accounting configured?)")
    keys = ["JobID", "State", "ElapsedRaw", "AllocTRES", "ExitCode", "NNodes", "NodeList"]
    return [dict(zip(keys, line.split("|"), strict=False)) for line in out.stdout.splitlines() if line.strip()]


def scheduler_usage(rows: list[dict[str, str]]) -> dict[str, Any]:
    """GPU-seconds as the scheduler bills them: sum over attempts of ElapsedRaw x gres/gpu
    (AllocTRES counts the GPUs of every node of the allocation), and the nodes it ran on."""
    gpu_seconds = elapsed = 0
    gpus = 0
    node_lists: list[str] = []
    for r in rows:
        if r.get("NodeList") and r["NodeList"] not in node_lists and r["NodeList"] != "None assigned":
            node_lists.append(r["NodeList"])
        tres = dict(t.split("=", 1) for t in r["AllocTRES"].split(",") if "=" in t)
        gpus = int(tres.get("gres/gpu", 0))
        elapsed += int(r["ElapsedRaw"] or 0)
        gpu_seconds += int(r["ElapsedRaw"] or 0) * gpus
    return {"source": "sacct AllocTRES gres/gpu x ElapsedRaw", "attempts": len(rows),
            "elapsed_seconds": elapsed, "gpus": gpus, "gpu_seconds": gpu_seconds,
            "nodes": int(rows[-1].get("NNodes") or 0) if rows else 0, "node_lists": node_lists,
            "gpu_hours": round(gpu_seconds / 3600, 6)}


def check_cluster(loaded: LoadedSpec) -> None:
    """Fail before submitting when the cluster cannot run the job (names the field): the
    partition must exist, have ``resources.nodes`` nodes, and nodes with the GPUs asked."""
    spec = loaded.spec
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%R|%N|%G"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError("CLUSTER=slurm: no `sinfo` on this machine; submit from a Slurm login node") from None
    if out.returncode:
        raise UserError(f"CLUSTER=slurm: sinfo failed: {out.stderr.strip()}")
    parts: dict[str, dict[str, int]] = {}  # partition -> node -> GPUs
    for line in out.stdout.splitlines():
        name, _, rest = line.partition("|")
        node, _, gres = rest.partition("|")
        gpus = sum(int(g.split(":")[-1].split("(")[0]) for g in gres.split(",") if g.startswith("gpu"))
        parts.setdefault(name, {})[node] = gpus
    want = spec.slurm.partition
    if want and want not in parts:
        raise UserError(f"{loaded.path}: slurm.partition: unknown partition {want!r}; "
                        f"this cluster has: {', '.join(sorted(parts))}")
    scope = {want: parts[want]} if want else parts
    where = f"partition {want}" if want else "any partition"
    res = spec.resources
    most = max((g for nodes in scope.values() for g in nodes.values()), default=0)
    if res.gpus_per_node > most:
        raise UserError(f"{loaded.path}: resources.gpus_per_node: {res.gpus_per_node} GPUs per "
                        f"node asked, but the largest node in {where} has {most}")
    fit = max((sum(g >= res.gpus_per_node for g in nodes.values()) for nodes in scope.values()), default=0)
    if res.nodes > fit:
        kind = f" with {res.gpus_per_node} GPUs" if res.gpus_per_node else ""
        raise UserError(f"{loaded.path}: resources.nodes: {res.nodes} nodes{kind} asked, but {where} has "
                        f"{fit}; lower resources.nodes or choose another slurm.partition")


PROBE = 'command -v "$1" >/dev/null || exit 3; "$1" -c "import $2" 2>/dev/null || exit 4'


def check_node_python(loaded: LoadedSpec) -> None:
    """On one compute node of the job's partition, the interpreter must exist and import
    alpaca_jobs (runtime none); a pyxis image needs srun's --container-image. A cluster that
    cannot run the probe within a short wait gets a one-line note, not a failure."""
    spec = loaded.spec
    c = spec.slurm.container
    if c.runtime == "pyxis":
        helped = subprocess.run(["srun", "--help"], capture_output=True, text=True, timeout=60).stdout
        if "--container-image" not in helped:
            raise UserError(f"{loaded.path}: slurm.container.runtime: pyxis, but this cluster's srun has no "
                            "--container-image (pyxis is not installed); use apptainer, or none with slurm.python")
        return
    python, what = ("apptainer", "slurm.container.runtime: apptainer") if c.runtime == "apptainer" \
        else (spec.slurm.python, "slurm.python")
    needs = kinds.get(spec.job).node_imports
    rc, said = _probe(python, needs, spec.slurm.partition, spec.slurm.account, spec.slurm.qos)
    where = f"a compute node of partition {spec.slurm.partition}" if spec.slurm.partition else "a compute node"
    if rc == 3:
        raise UserError(f"{loaded.path}: {what}: {python!r} is not a command on {where}; set slurm.python to the "
                        "interpreter there (a path), or slurm.container to run an image")
    if rc == 4 and c.runtime == "none":
        raise UserError(f"{loaded.path}: slurm.python: {python!r} on {where} cannot import {needs}; "
                        "install them there, set slurm.python to an interpreter that has them, or use slurm.container")
    if rc not in (0, 4):
        print(f"note: could not check {what} on {where} ({said}); submitting anyway", file=sys.stderr)


@functools.lru_cache(maxsize=16)
def _probe(python: str, needs: str, partition: str | None, account: str | None, qos: str | None) -> tuple[int, str]:
    """Run PROBE on one node (waiting at most 30 s for it): srun's exit code and last words."""
    cmd = ["srun", "-N1", "-n1", "--time=1", "--immediate=30", "--job-name=alpaca-jobs-preflight"]
    cmd += [f"--{k}={v}" for k, v in (("partition", partition), ("account", account), ("qos", qos)) if v]
    try:
        out = subprocess.run([*cmd, "sh", "-c", PROBE, "sh", python, needs], capture_output=True, text=True, timeout=90)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return -1, type(exc).__name__
    lines = out.stderr.strip().splitlines()
    return out.returncode, (lines[-1] if lines else f"exit {out.returncode}")
