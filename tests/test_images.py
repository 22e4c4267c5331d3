"""The container images: the Dockerfile is lint-clean, one target per job, non-root, no
secrets; and the generate and serve images really build (buildah) and run (podman)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCKERFILE = ROOT / "images" / "Dockerfile"


def test_hadolint_clean():
    hadolint = Path(sys.prefix) / "bin" / "hadolint"
    proc = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_targets_bases_user_entrypoint_and_healthcheck():
    text = DOCKERFILE.read_text()
    stages = {name: base for base, name in re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)}
    assert stages["slim"] == "${SLIM_BASE}" and stages["gpu"] == "${CUDA_BASE}"
    assert stages["generate"] == "slim" and stages["train"] == stages["serve"] == stages["evaluate"] == "gpu"
    assert text.count("USER 1000") == 2 and 'ENTRYPOINT ["alpaca-jobs"]' in text
    serve = text[text.index("AS serve"):]
    assert "HEALTHCHECK" in serve and "/healthz" in serve


def test_dependencies_pinned_and_no_secrets_baked_in():
    for req in ("requirements-slim.txt", "requirements-gpu.txt"):
        lines = [x for x in (ROOT / "images" / req).read_text().splitlines() if x and not x.startswith("#")]
        assert lines and all("==" in x for x in lines), req
    text = DOCKERFILE.read_text()
    assert not re.search(r"(API_KEY|TOKEN|SECRET|PASSWORD)\s*=", text, re.I)


@pytest.mark.buildah
@pytest.mark.slow
def test_generate_and_serve_images_build_and_run():
    """buildah builds the unchanged Dockerfile on stand-in bases; podman runs the results
    (generate prints its help, serve answers /healthz). See images/build-check.sh."""
    proc = subprocess.run([str(ROOT / "images" / "build-check.sh")], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "TAG": "test"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ok: generate and serve images built and ran" in proc.stderr
    hc = subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.Docker.Config.Healthcheck}}",
                         "alpaca-jobs/serve:test"], capture_output=True, text=True, check=True).stdout
    assert "/healthz" in hc
