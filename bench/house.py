"""How easy the house is to extend, measured on two commits (issue #21): lines of spec.py,
imports from one kind's package into another's, and functions over 50 lines.

    python bench/house.py 93351fa HEAD

Each commit is read straight out of git (``git archive``): the working tree is not touched.
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tarfile
from dataclasses import dataclass

KINDS = ("generate", "train", "serve", "evaluate")
LONG = 50  # lines: a function longer than this does not fit on one screen


@dataclass
class House:
    spec_lines: int
    cross_kind: list[str]  # "train/x.py:12 -> alpaca_jobs.serve"
    long_functions: list[str]  # "cli/__init__.py:main (73)"


def sources(rev: str) -> dict[str, str]:
    """path -> text of every .py file under alpaca_jobs/ at ``rev``."""
    blob = subprocess.run(["git", "archive", "--format=tar", rev, "alpaca_jobs"], capture_output=True,
                          check=True).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for m in tar.getmembers():
            if m.isfile() and m.name.endswith(".py"):
                out[m.name.removeprefix("alpaca_jobs/")] = tar.extractfile(m).read().decode()
    return out


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module]
    return []


def measure(files: dict[str, str]) -> House:
    cross, long = [], []
    for path, text in sorted(files.items()):
        tree = ast.parse(text)
        own = path.split("/")[0]
        for node in ast.walk(tree):
            for mod in _imported(node):
                parts = mod.split(".")
                if own in KINDS and len(parts) > 1 and parts[0] == "alpaca_jobs" \
                        and parts[1] in KINDS and parts[1] != own:
                    cross.append(f"{path}:{node.lineno} -> {mod}")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > LONG:
                    long.append(f"{path}:{node.name} ({n})")
    return House(len(files.get("spec.py", "").splitlines()), cross, long)


def main(before: str, after: str) -> None:
    a, b = measure(sources(before)), measure(sources(after))
    print(f"{'':38}{before:>12}{after:>12}")
    print(f"{'lines of alpaca_jobs/spec.py':38}{a.spec_lines:>12}{b.spec_lines:>12}")
    print(f"{'imports of another kind package':38}{len(a.cross_kind):>12}{len(b.cross_kind):>12}")
    print(f"{f'functions over {LONG} lines':38}{len(a.long_functions):>12}{len(b.long_functions):>12}")
    for name, h in ((before, a), (after, b)):
        print(f"\n{name}:")
        for line in h.cross_kind + h.long_functions:
            print(f"  {line}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python bench/house.py BEFORE_REV AFTER_REV")
    main(sys.argv[1], sys.argv[2])
