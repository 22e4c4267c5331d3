"""Run a pipeline: generate -> train -> serve -> evaluate, each an ordinary job on a backend.

Stage runs are ``<pipeline id>-<stage>`` in their spec's runs dir, so every stage can also be
followed, cancelled or re-run alone with the usual commands. A re-run of the pipeline with
the same id skips stages that completed and resumes the others (generation from its raw-reply
log, training from its last checkpoint, evaluation from its saved outputs and judgments).

Cost: before anything starts, every stage that will run (and the teacher it starts) is costed
and held to its spec's ``cost.max_usd`` (``--over-budget`` lifts that); each is then submitted
through ``alpaca_jobs.submission`` like any run, so it is checked again with what it reads.

Ordering: on Slurm the stages are submitted at once as dependent jobs (``afterok``: a stage
starts only when the one before it succeeded; a failure cancels the rest). Elsewhere this
process submits each stage once the one before it completed (``--no-wait`` is Slurm-only).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alpaca_jobs import submission
from alpaca_jobs.backends import get_backend
from alpaca_jobs.backends.base import JobHandle
from alpaca_jobs.backends.states import State, is_active
from alpaca_jobs.common import kinds
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.ops.record import load_record
from alpaca_jobs.pipeline.spec import PLACEHOLDER, load_pipeline, resolve
from alpaca_jobs.pipeline.state import Pipeline, StageRun, stage_state
from alpaca_jobs.spec import load_spec


def run_pipeline(spec_path: str, cluster: str, pipeline_id: str | None, wait: bool,
                 echo=print, keep_serving: bool | None = None, screen: Callable[[Path], Any] | None = None,
                 over_budget: bool = False) -> Pipeline:
    """Run (or resume) the pipeline. Servers keep running on clusters (they are the product);
    on a backend attached to this session they are stopped after the summary unless
    ``keep_serving``. ``screen``: run dir -> what draws a followed stage's progress (the CLI's
    terminal follower; ``enabled``, ``feed(text)``, ``close()``); none: state lines only.
    ``over_budget``: start stages whose estimate is above their ``cost.max_usd``."""
    return _Run(spec_path, cluster, pipeline_id, wait, echo, keep_serving, screen or _NoScreen,
                over_budget).go()


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
                 keep_serving: bool | None, screen: Callable[[Path], Any], over_budget: bool) -> None:
        from alpaca_jobs.backends.base import new_run_id

        self.pspec = load_pipeline(spec_path)
        self.pid = pipeline_id or new_run_id(self.pspec.pipeline)
        self.pipe = Pipeline(self.pid, spec_path, cluster, Path(self.pspec.runs_dir) / self.pid,
                             values={"pipeline.id": self.pid})
        self.backend = get_backend(cluster)
        self.caps = self.backend.capabilities
        self.base = Path(spec_path).parent
        self.wait, self.echo, self.screen = wait, echo, screen
        self.options = submission.Options(over_budget=over_budget)
        self.forecasts: dict[str, Any] = {}  # stage -> its forecast before anything started
        self.keep_serving = not self.caps.attached if keep_serving is None else keep_serving
        self.teacher_jobs: list[tuple[Any, JobHandle]] = []  # the teacher: always stopped at the end
        self.started: list[tuple[Any, JobHandle]] = []  # servers: stopped unless keep_serving
        self.previous: JobHandle | None = None  # the last batch stage submitted
        self.prev_stage = ""
        self.followed: set[str] = set()

    def go(self) -> Pipeline:
        pipe, previous = self.pipe, None
        self._cost_all()  # a refusal leaves nothing behind: no run dir, no stage, no teacher
        try:
            if self.pspec.teacher is not None:
                self._teacher()
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
                run.status = stage_state(run) if run.job_id else run.status
            pipe.save()

    def _cost_all(self) -> None:
        """Every stage that will run, and the teacher, costed and held to its ``cost.max_usd``
        before any starts. What only a running server tells (``${teacher.url}``,
        ``${serve.model}``...) is not known yet: stand-ins fill those placeholders (a URL or a
        model name changes no cost); a stage's outputs are paths, known from its run dir."""
        values, runs, pipe = dict(self.pipe.values), [], self.pipe
        t = self.pspec.teacher
        if t is not None and t.spec:
            if not self.caps.reachable:
                raise UserError(f"{pipe.spec_path}: teacher.spec starts a server this process must reach, "
                                f"which the {pipe.cluster} backend cannot promise; give teacher.url (an "
                                "endpoint) instead")
            runs.append(submission.Run(load_spec(self.base / t.spec, t.set), f"{self.pid}-teacher",
                                       f"{pipe.spec_path}: teacher"))
            values.update(_pending("teacher"))
        elif t is not None:
            values.update({"teacher.url": t.url, "teacher.model": t.model})
        unmade: dict[str, str] = {}  # outputs of the stages that are still to run -> their stage
        for stage in self.pspec.order:
            loaded, rid, kind = self._load(stage, values), f"{self.pid}-{stage}", kinds.get(stage)
            run_dir = self.backend.render(loaded, rid).run_dir
            outputs = _outputs(stage, run_dir)
            values.update(outputs)
            if kind.long_running:
                values.update(_pending(stage))
            elif _finished(run_dir):
                continue  # reused, not run again: it costs nothing more
            waits = _waiting_on(self.pspec.stages[stage].set, unmade)
            unmade.update(dict.fromkeys(outputs, stage))
            runs.append(submission.Run(loaded, rid, self._label(stage, loaded), waits))
        for p in submission.cost(self.backend, runs, self.options):
            stage = p.run.run_id.removeprefix(f"{self.pid}-")
            self.forecasts[stage] = p.forecast
            for line in p.forecast.lines():
                self.echo(f"[{stage}] {line.strip()}")

    def _label(self, stage: str, loaded) -> str:
        """How a refusal names a stage: the pipeline file, the stage, its spec file."""
        return f"{self.pipe.spec_path}: stages.{stage} ({loaded.path})"

    def _load(self, stage: str, values: dict[str, str]):
        st, spec_path = self.pspec.stages[stage], self.pipe.spec_path
        loaded = load_spec(self.base / st.spec, resolve(st.set, values, f"{spec_path}: stages.{stage}"))
        if loaded.spec.job != stage:
            raise UserError(f"{spec_path}: stages.{stage}.spec is a {loaded.spec.job} job")
        return loaded

    def _stage(self, stage: str) -> None:
        pipe, previous = self.pipe, self.previous
        loaded = self._load(stage, pipe.values)
        rid, kind = f"{self.pid}-{stage}", kinds.get(stage)
        # With dependencies the scheduler holds this stage until the previous one completes.
        after = [previous.job_id] if previous is not None and self.caps.dependencies else None
        sub = self.backend.render(loaded, rid, after=after)
        run = pipe.stages[stage] = StageRun(stage, rid, str(sub.run_dir), pipe.cluster)
        pipe.values.update(_outputs(stage, sub.run_dir))
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
        handle = self._send(stage, loaded, sub.run_id, self._label(stage, loaded), after)
        self.echo(f"[{stage}] submitted {sub.run_id} to {self.pipe.cluster} (job {handle.job_id})"
                  + (f" after job {after[0]}" if after else ""))
        return handle

    def _send(self, stage: str, loaded, run_id: str, label: str, after: list[str] | None = None) -> JobHandle:
        """Through the submit service: preflight, cost and budget (again, now that its inputs
        exist: a new figure is said), submit."""
        options = submission.Options(over_budget=self.options.over_budget, after=tuple(after or ()))
        result = submission.submit(self.backend, [submission.Run(loaded, run_id, label)], options)
        fc = result.planned[0].forecast
        if fc != self.forecasts.get(stage):
            for line in fc.lines():
                self.echo(f"[{stage}] {line.strip()}")
        return result.handles[0]

    def _teacher(self) -> None:
        pipe, t = self.pipe, self.pspec.teacher
        if t.url:
            pipe.values["teacher.url"], pipe.values["teacher.model"] = t.url, t.model
            return
        loaded = load_spec(self.base / t.spec, t.set)
        handle = self._send("teacher", loaded, f"{pipe.id}-teacher", f"{pipe.spec_path}: teacher")
        self.echo(f"[teacher] serving {loaded.spec.serve.model or 'SmolLM2-135M-Instruct'} as the teacher "
                  f"(run {handle.run_id})")
        self.teacher_jobs.append((self.backend, handle))
        url = _wait_ready(self.backend, handle, loaded, self.echo)
        pipe.values["teacher.url"], pipe.values["teacher.model"] = url, _served_model(url)
        pipe.stages["teacher"] = StageRun("teacher", handle.run_id, handle.run_dir, pipe.cluster, handle.job_id,
                                          "RUNNING", url=url)
        pipe.save()

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


def _outputs(stage: str, run_dir: Path) -> dict[str, str]:
    """What a stage leaves behind (its kind's ``outputs``), for the stages after it."""
    outputs = kinds.get(stage).outputs
    return {} if outputs is None else outputs(Path(run_dir))


def _waiting_on(assignments: list[str], unmade: dict[str, str]) -> str:
    """Which of a stage's inputs (``${kind.name}`` in its assignments) a stage still to run makes:
    e.g. '${generate.data} is made by stage generate, which has not run yet'; '' when none."""
    refs = sorted({ref for a in assignments for ref in PLACEHOLDER.findall(a) if ref in unmade})
    return "; ".join(f"${{{ref}}} is made by stage {unmade[ref]}, which has not run yet" for ref in refs)


def _pending(server: str) -> dict[str, str]:
    """Stand-ins for what a server tells once it is up, to cost the stages that use it."""
    return {f"{server}.url": f"http://pending.invalid/{server}", f"{server}.model": f"pending-{server}"}


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
    return rec is not None and rec.status == "completed"


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
        if rec and rec.error:  # the job said why: that line, not its traceback
            echo(f"[{stage}] ended {state}: {rec.error}\n  (its log: alpaca-jobs logs {handle.run_id} "
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


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
