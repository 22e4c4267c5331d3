"""The import direction the package is built on (``.importlinter``): cli -> pipeline ->
backends -> runtime -> jobs -> ops -> job/spec -> common; nothing imports the CLI; the run
record model imports nothing else from ops; the shared layer imports no torch. And no module
imports one that imports it back, however far round."""

from __future__ import annotations

from tests.conftest import ROOT


def test_import_contracts_hold():
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / ".importlinter")) == 0
