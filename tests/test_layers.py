"""The import direction the package is built on (``.importlinter``): cli -> pipeline ->
submission -> backends -> runtime -> jobs -> ops -> job/spec -> common; nothing imports the
CLI; the run record model imports nothing else from ops; the shared layer imports no torch.
And no module imports one that imports it back, however far round."""

from __future__ import annotations

import grimp

from tests.conftest import ROOT


def test_import_contracts_hold():
    """In a process of its own: import-linter reconfigures logging where it runs."""
    import subprocess
    import sys

    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / '.importlinter')!r}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles():
    # As in .importlinter: an `if TYPE_CHECKING:` import is an annotation, never run, so it
    # closes no circle (common.kinds names the record model that reads kinds' budgets).
    graph = grimp.build_graph("alpaca_jobs", exclude_type_checking_imports=True)
    assert _cycles(graph) == []


# A kind's own CLI command checks that its spec is of that kind: the one place outside a kind's
# package that may name it.
OWN_COMMANDS = {("cli/__init__.py", "serve"), ("cli/evaluate.py", "evaluate")}


def test_no_kind_or_cluster_name_is_branched_on_outside_its_module():
    """Generic code asks the registries (a Kind's declaration, a Backend's capabilities); a
    comparison with a kind's or a backend's name belongs in that kind's package or backend's module."""
    import ast

    from alpaca_jobs.backends import BACKENDS
    from alpaca_jobs.common import kinds

    names = set(kinds.DECLARED) | set(BACKENDS)
    root = ROOT / "alpaca_jobs"
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        own = {rel.parts[0], path.stem.split("_")[0]}  # train/..., backends/slurm.py, slurm_config.py
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            for side in (node.left, *node.comparators):
                for value in (side, *getattr(side, "elts", ())):
                    name = getattr(value, "value", None)
                    if name in names and name not in own and (rel.as_posix(), name) not in OWN_COMMANDS:
                        found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
