"""rMD17 (revised MD17, one ``.npz`` per molecule: ``nuclear_charges``, ``coords``, ``energies``,
``forces`` in kcal/mol). JMP's split: 1000 training frames per molecule, 950 train / 50 val, all other
frames test, from ``RandomState(42)``."""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from fairchem_prune.datasets.md_npz import read_md_npz
from fairchem_prune.datasets.splits import SplitSpec

SPLIT = SplitSpec(train=950, val=50, test=None)


def read(raw: str | Path) -> list[Atoms]:
    """Frames of one rMD17 molecule, energies in eV, forces in eV/Å."""
    return read_md_npz(raw, numbers="nuclear_charges", positions="coords", energies="energies", forces="forces")


def split(raw: str | Path, sizes: dict[str, int | None]) -> SplitSpec:
    return SPLIT
