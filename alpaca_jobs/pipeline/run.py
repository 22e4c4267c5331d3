"""Run a pipeline: generate -> train -> serve -> evaluate, each an ordinary job on a backend.

Stage runs are ``<pipeline id>-<stage>`` in their spec's runs dir, so every stage can also be
followed, cancelled or re-run alone with the usual commands. A re-run of the pipeline with
the same id skips stages that completed and resumes the others (generation from its raw-reply
log, training from its last checkpoint, evaluation from its saved outputs and judgments).

Ordering: on Slurm the stages are submitted at once as dependent jobs (``afterok``: a stage
starts only when the one before it succeeded; a failure cancels the rest). Elsewhere this
process submits each stage once the one before it completed (``--no-wait`` is Slurm-only).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alpaca_jobs.backends import get_backend
from alpaca_jobs.backends.base import JobHandle
from alpaca_jobs.backends.states import State, is_active
from alpaca_jobs.common import kinds
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.ops.record import load_record
from alpaca_jobs.pipeline.spec import PipelineSpec, load_pipeline, resolve
from alpaca_jobs.spec import load_spec

PIPELINE_FILE = "pipeline.json"


@dataclass
class StageRun:
    stage: str
    run_id: str
    run_dir: str
    backend: str
    job_id: str = ""
    status: str = "PENDING"
    reused: bool = False
    url: str | None = None


@dataclass
class Pipeline:
    id: str
    spec_path: str
    cluster: str
    dir: Path
    stages: dict[str, StageRun] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        from alpaca_jobs.common.files import atomic_write

        self.dir.mkdir(parents=True, exist_ok=True)
        body = {"id": self.id, "spec": self.spec_path, "cluster": self.cluster,
                "stages": {k: vars(v) for k, v in self.stages.items()}, "values": self.values,
                "checks": self.checks}
        atomic_write(self.dir / PIPELINE_FILE, json.dumps(body, indent=1) + "\n")


def run_pipeline(spec_path: str, cluster: str, pipeline_id: str | None, wait: bool,
                 echo=print, keep_serving: bool | None = None, screen: Callable[[Path], Any] | None = None) -> Pipeline:
    """Run (or resume) the pipeline. Servers keep running on clusters (they are the product);
    on a backend attached to this session they are stopped after the summary unless
    ``keep_serving``. ``screen``: run dir -> what draws a followed stage's progress (the CLI's
    terminal follower; ``enabled``, ``feed(text)``, ``close()``); none: state lines only."""
    return _Run(spec_path, cluster, pipeline_id, wait, echo, keep_serving, screen or _NoScreen).go()


class _NoScreen:
    enabled = False

    def __init__(self, run_dir: Path) -> None:
        pass

    def feed(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class _Run:
    def __init__(self, spec_path: str, cluster: str, pipeline_id: str | None, wait: bool, echo,
                 keep_serving: bool | None, screen: Callable[[Path], Any]) -> None:
        from alpaca_jobs.backends.base import new_run_id

        self.pspec = load_pipeline(spec_path)
        self.pid = pipeline_id or new_run_id(self.pspec.pipeline)
        self.pipe = Pipeline(self.pid, spec_path, cluster, Path(self.pspec.runs_dir) / self.pid,
                             values={"pipeline.id": self.pid})
        self.backend = get_backend(cluster)
        self.caps = self.backend.capabilities
        self.base = Path(spec_path).parent
        self.wait, self.echo, self.screen = wait, echo, screen
        self.keep_serving = not self.caps.attached if keep_serving is None else keep_serving
        self.teacher_jobs: list[tuple[Any, JobHandle]] = []  # the teacher: always stopped at the end
        self.started: list[tuple[Any, JobHandle]] = []  # servers: stopped unless keep_serving
        self.previous: JobHandle | None = None  # the last batch stage submitted
        self.prev_stage = ""
        self.followed: set[str] = set()

    def go(self) -> Pipeline:
        pipe, previous = self.pipe, None
        try:
            if self.pspec.teacher is not None:
                _teacher(self.pspec, pipe, self.backend, self.base, pipe.cluster, self.echo, self.teacher_jobs)
            for stage in self.pspec.order:
                self._stage(stage)
            previous = self.previous
            if previous is not None and (self.wait or not self.caps.dependencies) \
                    and previous.run_id not in self.followed \
                    and not _follow(self.backend, previous, self.prev_stage, pipe, self.echo, self.screen):
                raise UserError(f"stage {previous.run_id} did not complete; re-run with --run-id {self.pid}")
            pipe.save()
            return pipe
        except KeyboardInterrupt:
            previous = self.previous
            if previous is not None and self.caps.attached and self.backend.status(previous).active:
                self.backend.cancel(previous)  # a local stage would go on without its teacher: stop it too
            raise UserError(f"interrupted; re-run with --run-id {self.pid} to go on (completed stages are "
                            "reused, a cancelled one resumes)") from None
        finally:
            for b, h in self.teacher_jobs + ([] if self.keep_serving else self.started):
                b.cancel(h)
                _wait_gone(b, h)
            for run in pipe.stages.values():
                run.status = _state_of(run) if run.job_id else run.status
            pipe.save()

    def _stage(self, stage: str) -> None:
        pipe, previous, spec_path = self.pipe, self.previous, self.pipe.spec_path
        st = self.pspec.stages[stage]
        loaded = load_spec(self.base / st.spec, resolve(st.set, pipe.values, f"{spec_path}: stages.{stage}"))
        if loaded.spec.job != stage:
            raise UserError(f"{spec_path}: stages.{stage}.spec is a {loaded.spec.job} job")
        rid, kind = f"{self.pid}-{stage}", kinds.get(stage)
        # With dependencies the scheduler holds this stage until the previous one completes.
        after = [previous.job_id] if previous is not None and self.caps.dependencies else None
        sub = self.backend.render(loaded, rid, after=after)
        run = pipe.stages[stage] = StageRun(stage, rid, str(sub.run_dir), pipe.cluster)
        _publish_values(pipe, stage, sub.run_dir)
        if _finished(sub.run_dir) and not kind.long_running:
            run.status, run.reused = "COMPLETED", True
            self.echo(f"[{stage}] {rid}: completed before; reusing its outputs")
            pipe.save()
            return
        if previous is not None and not self.caps.dependencies and previous.run_id not in self.followed:
            self.followed.add(previous.run_id)
            if not _follow(self.backend, previous, self.prev_stage, pipe, self.echo, self.screen):
                raise UserError(f"stage {previous.run_id} did not complete; fix it and re-run "
                                f"with --run-id {self.pid} (completed stages are reused)")
        handle = self._submit(stage, loaded, sub, after)
        run.job_id, run.status = handle.job_id, State.SUBMITTED
        pipe.save()
        if kind.long_running:
            self._serving(stage, kind, run, handle, loaded)
        else:
            self.previous, self.prev_stage = handle, stage

    def _submit(self, stage: str, loaded, sub, after: list[str] | None) -> JobHandle:
        handle = _still_active(self.backend, sub.run_dir)
        if handle is not None:  # submitted by an earlier run of this pipeline: follow it
            self.echo(f"[{stage}] {sub.run_id} is already queued or running (job {handle.job_id}); following it")
            return handle
        self.backend.preflight(loaded)
        handle = self.backend.submit(sub)
        self.echo(f"[{stage}] submitted {sub.run_id} to {self.pipe.cluster} (job {handle.job_id})"
                  + (f" after job {after[0]}" if after else ""))
        return handle

    def _serving(self, stage: str, kind, run: StageRun, handle: JobHandle, loaded) -> None:
        """A server: nothing waits on its end. Where it can be reached from here, its URL and
        model go to the later stages (``${<stage>.url}``, ``${<stage>.model}``), with its check."""
        self.started.append((self.backend, handle))
        if not self.caps.reachable:
            return
        pipe = self.pipe
        run.url = _wait_ready(self.backend, handle, loaded, self.echo)
        pipe.values[f"{stage}.url"] = run.url
        pipe.values[f"{stage}.model"] = _served_model(run.url)
        if kind.service.check is not None:
            name, check = kind.service.check
            pipe.checks[name] = check(run.url, pipe.values[f"{stage}.model"])
            self.echo(f"[{stage}] {name} check: {json.dumps(pipe.checks[name])}")


def _teacher(pspec: PipelineSpec, pipe: Pipeline, backend, base: Path, cluster: str, echo, started) -> None:
    t = pspec.teacher
    if t.url:
        pipe.values["teacher.url"], pipe.values["teacher.model"] = t.url, t.model
        return
    if not backend.capabilities.reachable:
        raise UserError(f"{pipe.spec_path}: teacher.spec starts a server this process must reach, "
                        f"which the {cluster} backend cannot promise; give teacher.url (an endpoint) instead")
    loaded = load_spec(base / t.spec, t.set)
    handle = backend.submit(backend.render(loaded, f"{pipe.id}-teacher"))
    echo(f"[teacher] serving {loaded.spec.serve.model or 'SmolLM2-135M-Instruct'} as the teacher "
         f"(run {handle.run_id})")
    started.append((backend, handle))
    url = _wait_ready(backend, handle, loaded, echo)
    pipe.values["teacher.url"], pipe.values["teacher.model"] = url, _served_model(url)
    pipe.stages["teacher"] = StageRun("teacher", handle.run_id, handle.run_dir, cluster, handle.job_id,
                                      "RUNNING", url=url)
    pipe.save()


def _publish_values(pipe: Pipeline, stage: str, run_dir: Path) -> None:
    """What a stage leaves behind (its kind's ``outputs``), for the stages after it."""
    outputs = kinds.get(stage).outputs
    if outputs is not None:
        pipe.values.update(outputs(Path(run_dir)))


def _still_active(backend, run_dir: Path) -> JobHandle | None:
    from alpaca_jobs.backends.base import HANDLE_FILE

    if not (Path(run_dir) / HANDLE_FILE).is_file():
        return None
    handle = JobHandle.load(Path(run_dir))
    if handle.backend != backend.name:
        return None
    return handle if backend.status(handle).active else None


def _finished(run_dir: Path) -> bool:
    rec = load_record(Path(run_dir))
    return bool(rec and rec.get("status") == "completed")


def _follow(backend, handle: JobHandle, stage: str, pipe: Pipeline, echo, screen: Callable[[Path], Any],
            poll: float = 2.0) -> bool:
    """Wait for a stage to end, saying each state it passes through; on a terminal, the stage's
    progress bar (from its ``progress.json``, as ``submit`` draws it) stays under those lines."""
    screen = screen(Path(handle.run_dir))
    say = (lambda text: screen.feed(text + "\n")) if screen.enabled else echo
    last = ""
    try:
        while True:
            state = backend.status(handle)
            if state != last:
                say(f"[{stage}] {state}")
                last = state
            if not is_active(state):
                break
            if screen.enabled:
                screen.feed("")  # redraw the bar
            time.sleep(poll)
    finally:
        screen.close()
    backend.finalize(handle)
    pipe.stages[stage].status = state
    pipe.save()
    if state != "COMPLETED":
        rec = load_record(Path(handle.run_dir))
        if rec and rec.get("error"):  # the job said why: that line, not its traceback
            echo(f"[{stage}] ended {state}: {rec['error']}\n  (its log: alpaca-jobs logs {handle.run_id} "
                 f"--runs-dir {Path(handle.run_dir).parent})")
        else:
            echo(f"[{stage}] ended {state}\n--- last lines of its log ---\n{_tail(backend.logs(handle))}")
    return state == "COMPLETED"


def _wait_ready(backend, handle: JobHandle, loaded, echo, timeout: float = 600) -> str:
    cfg = loaded.spec.serve
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    base = f"http://{host}:{cfg.port}"
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2):
                return base + "/v1"
        except OSError:
            if not backend.status(handle).active:
                raise UserError(f"server {handle.run_id} stopped before it was ready:\n"
                                f"{_tail(backend.logs(handle))}") from None
            time.sleep(1.0)
    raise UserError(f"server {handle.run_id} not ready at {base} after {timeout:.0f} s")


def _wait_gone(backend, handle: JobHandle, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end and backend.status(handle).active:
        time.sleep(0.5)


def _served_model(url: str) -> str:
    with urllib.request.urlopen(url + "/models", timeout=10) as r:
        return json.loads(r.read())["data"][0]["id"]


def _state_of(run: StageRun) -> str:
    try:
        backend = get_backend(run.backend)
        return backend.status(JobHandle.load(Path(run.run_dir)))
    except Exception:  # noqa: BLE001 - a status line is best effort
        return run.status


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
