"""common.files.atomic_write: whole files only, under concurrent writers too."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from alpaca_jobs.common.files import atomic_write


def test_threads_writing_one_path_never_mix_or_fail(tmp_path: Path):
    target = tmp_path / "state.json"
    texts = [f"{i}:" + str(i) * 50_000 for i in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(texts))

    def writer(text: str) -> None:
        start.wait()
        try:
            for _ in range(20):
                atomic_write(target, text)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert target.read_text() in texts  # one writer's text, whole
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left behind


def test_mode_is_what_open_would_give_and_a_failed_write_leaves_the_old_file(tmp_path: Path):
    target = tmp_path / "metrics.prom"
    atomic_write(target, "old\n")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # other readers (node exporter)
    with pytest.raises(TypeError):
        atomic_write(target, None)  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.prom"]
