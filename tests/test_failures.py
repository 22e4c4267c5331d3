"""Which failures a backend restarts: a lost peer yes, the run's own error no."""

from __future__ import annotations

import pytest

from alpaca_jobs.common.errors import DataError
from alpaca_jobs.common.failures import NO_RETRY, mark_no_retry, peer_lost


class DistBackendError(RuntimeError):  # the name torch.distributed gives its backend failures
    pass


@pytest.mark.parametrize("exc,lost", [
    (RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [10.213.77.12]:4711"), True),
    (RuntimeError("[gloo/transport/tcp/pair.cc:589] Read error [10.0.0.2]: Connection reset by peer"), True),
    (DistBackendError("NCCL error: unhandled system error"), True),
    (ConnectionError("Broken pipe"), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
    (ValueError("invalid literal for int() with base 10: 'wide'"), False),
    (DataError("data.jsonl line 3: not JSON"), False),
    (KeyError("connection refused"), False),  # the words alone do not make a lost peer
])
def test_peer_lost(exc, lost):
    assert peer_lost(exc) is lost


def test_mark_no_retry_is_one_line(tmp_path):
    mark_no_retry(tmp_path, "ValueError: bad\n  value\twide")
    assert (tmp_path / NO_RETRY).read_text() == "ValueError: bad value wide\n"
    mark_no_retry(tmp_path / "missing" / "dir", "x")  # on the failure path it never raises


def test_runtime_marks_its_own_error_and_not_a_stop(tmp_path):
    """A body raising its own error leaves no-retry for the backend; a stop (SIGTERM) does not."""
    from alpaca_jobs.job import Payload
    from alpaca_jobs.runtime import run_job
    from alpaca_jobs.spec import load_spec
    from tests.conftest import ROOT

    def build(name):
        return Payload.build(load_spec(ROOT / "jobs/train-local.yaml"), name, "local", tmp_path / name)

    def broken(_job):
        raise ValueError("wide")

    with pytest.raises(ValueError):
        run_job(build("own"), broken)
    assert "ValueError: wide" in (tmp_path / "own" / NO_RETRY).read_text()

    def stopped(_job):
        raise KeyboardInterrupt("received SIGTERM")

    with pytest.raises(KeyboardInterrupt):
        run_job(build("stop"), stopped)
    assert not (tmp_path / "stop" / NO_RETRY).exists()
