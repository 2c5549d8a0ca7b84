"""Shared fixtures of the fairchem-core 2.x suite (run from .venv-fairchem2: ``pytest tests_fairchem2``).

``fixtures/uma/`` is a tiny UMA-architecture checkpoint (6 blocks, 4 experts, MoLE energy head, raw and
EMA weights) made and run with fairchem-core 2.24's own code, two reduced checkpoints made by hand
surgery, and the outputs of ``FAIRChemCalculator`` on 9 systems and 5 tasks (see its README)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

FIXTURES = Path(__file__).parent / "fixtures" / "uma"
UMA_TINY = FIXTURES / "uma_tiny.pt"
#: hand-made reduced checkpoints: name in reference.npz -> (file, blocks of the full model)
REDUCED = {"first4": (FIXTURES / "uma_tiny_first4.pt", [0, 1, 2, 3]),
           "blocks0135": (FIXTURES / "uma_tiny_blocks0135.pt", [0, 1, 3, 5])}
BIN = Path(sys.executable).parent

torch.set_num_threads(1)  # the references were made with one thread


@pytest.fixture(scope="session")
def reference():
    return dict(np.load(FIXTURES / "reference.npz"))


def systems(reference) -> list[str]:
    return [str(s) for s in reference["systems"]]


def system_atoms(reference, name: str) -> tuple[Atoms, str]:
    """The fixture's system ``name`` as ASE atoms (charge and spin in ``info``) and its task."""
    z = reference
    atoms = Atoms(numbers=z[f"{name}__numbers"], positions=z[f"{name}__positions"], cell=z[f"{name}__cell"],
                  pbc=z[f"{name}__pbc"])
    atoms.info.update(charge=int(z[f"{name}__charge"]), spin=int(z[f"{name}__spin"]))
    return atoms, str(z[f"{name}__task"])


def cli(*args, cwd, check: bool = True) -> subprocess.CompletedProcess:
    """``fairchem-prune ARGS`` of this environment (one thread), its completed process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(BIN / "fairchem-prune"), *map(str, args)], capture_output=True, text=True,
                            cwd=cwd, env=env)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result
