"""MD22 (one ``.npz`` per molecule: ``z``, ``R`` in Å, ``E`` and ``F`` in kcal/mol). JMP's training
sizes per molecule, 95 % of them train and 5 % val; all other frames test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from fairchem_prune.datasets.md_npz import read_md_npz
from fairchem_prune.datasets.splits import SplitSpec
from fairchem_prune.errors import PruneError

#: frames used for training (train + val) per MD22 molecule, as in JMP
TRAINING_FRAMES = {
    "Ac-Ala3-NHMe": 6000,
    "DHA": 8000,
    "stachyose": 8000,
    "AT-AT": 3000,
    "AT-AT-CG-CG": 2000,
    "buckyball-catcher": 600,
    "double-walled_nanotube": 800,
}


def read(raw: str | Path) -> list[Atoms]:
    """Frames of one MD22 molecule, energies in eV, forces in eV/Å."""
    return read_md_npz(raw, numbers="z", positions="R", energies="E", forces="F")


def molecule_name(raw: str | Path) -> str | None:
    """The MD22 molecule of ``raw``: its ``name`` entry or file name (``md22_AT-AT.npz``), or ``None``."""
    with np.load(raw, allow_pickle=False) as arrays:
        candidates = [str(arrays["name"])] if "name" in arrays else []
    candidates.append(Path(raw).stem.removeprefix("md22_"))
    canonical = {key.lower().replace("_", "-"): key for key in TRAINING_FRAMES}
    for candidate in candidates:
        key = canonical.get(candidate.lower().replace("_", "-"))
        if key is not None:
            return key
    return None


def split(raw: str | Path, sizes: dict[str, int | None]) -> SplitSpec:
    """JMP's split of the molecule in ``raw``: 95 %/5 % of its training frames, the rest test. Other
    molecules need ``sizes`` for train and val."""
    name = molecule_name(raw)
    if name is None and sizes.get("train") and sizes.get("val"):
        return SplitSpec(train=sizes["train"], val=sizes["val"], test=None)
    if name is None:
        raise PruneError(f"{raw}: not one of the MD22 molecules ({', '.join(TRAINING_FRAMES)}) by its 'name' key "
                         "or file name; pass --train-size and --val-size")
    total = TRAINING_FRAMES[name]
    return SplitSpec(train=total - total // 20, val=total // 20, test=None)
