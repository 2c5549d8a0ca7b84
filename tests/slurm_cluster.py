"""The ``slurm`` marker of both suites (``tests/``, ``tests_fairchem2/``; each conftest imports the hook):
tests marked ``slurm`` need the single-node cluster of ``.ci/slurm.sh``."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _slurm_cluster() -> str | None:
    """Why no Slurm cluster answers (None when one does)."""
    if shutil.which("sinfo") is None:
        return "no Slurm client on PATH"
    result = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0 or "idle" not in result.stdout.split() and "mix" not in result.stdout.split():
        return "no idle Slurm node answers sinfo"
    return None


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slurm`` skip with one line where no cluster runs; under CI (``CI=true``), where
    .ci/run starts one with .ci/slurm.sh, a missing cluster stops the session."""
    marked = [item for item in items if item.get_closest_marker("slurm")]
    if not marked:
        return
    reason = _slurm_cluster()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError(f"CI=true but {reason}: .ci/run starts the cluster with .ci/slurm.sh start")
    for item in marked:
        item.add_marker(pytest.mark.skip(reason=f"{reason} (start one: .ci/slurm.sh start; eval \"$(.ci/slurm.sh env)\")"))
