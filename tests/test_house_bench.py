"""bench/house.py counts what issue #21 measures: it must see a cross-kind import and a long
function where there is one, and none where there is none."""

import subprocess

import pytest

from bench.house import LONG, measure, sources
from tests.conftest import ROOT


def test_measure_finds_cross_kind_imports_and_long_functions():
    body = "\n".join(f"    x{i} = {i}" for i in range(LONG))  # with its def line: LONG + 1 lines
    files = {
        "spec.py": "a = 1\nb = 2\n",
        "serve/server.py": "def f():\n    from alpaca_jobs.train.models import load\n",
        "serve/other.py": "from alpaca_jobs.serve import server\nfrom alpaca_jobs.common import kinds\n",
        "cli/main.py": f"from alpaca_jobs.train import loop\ndef long():\n{body}\n",
    }
    h = measure(files)
    assert h.spec_lines == 2
    assert h.cross_kind == ["serve/server.py:2 -> alpaca_jobs.train.models"]  # the CLI may import kinds
    assert h.long_functions == [f"cli/main.py:long ({LONG + 1})"]
    just_fits = "\n".join(body.splitlines()[:-1])  # LONG lines with its def line
    assert measure({"cli/main.py": f"def short():\n{just_fits}\n"}).long_functions == []


def test_head_has_no_kind_package_importing_another(monkeypatch):
    monkeypatch.chdir(ROOT)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout (an unpacked archive): no commit to read back")
    files = sources("HEAD")
    assert "spec.py" in files and measure(files).cross_kind == []
