"""Any file that ASE reads (extxyz, ASE trajectory, ASE database, ...): a user's own data. The target
is the calculator's energy (with its forces when every structure has them) or any ``atoms.info``
key; 80/10/10 split."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from fairchem_prune.datasets.raw import finite, labelled, require_file
from fairchem_prune.datasets.splits import SplitSpec
from fairchem_prune.errors import PruneError

SPLIT = SplitSpec(train=0.8, val=0.1, test=None)


def read(raw: str | Path, target: str = "energy") -> list[Atoms]:
    """All structures of ``raw``, labelled with ``target``: ``energy`` (eV, with forces in eV/Å where
    every structure has them) or an ``info`` key (its value as stored)."""
    path = require_file(raw)
    try:
        structures = ase.io.read(path, index=":")
    except Exception as err:  # ASE raises many types for unreadable files
        raise PruneError(f"{path}: ASE cannot read it ({type(err).__name__}: {err})") from None
    if not structures:
        raise PruneError(f"{path} holds no structures")
    with_forces = target == "energy" and all(a.calc is not None and "forces" in a.calc.results for a in structures)
    out = []
    for i, atoms in enumerate(structures):
        where = f"structure {i}"
        if target == "energy":
            if atoms.calc is None or "energy" not in atoms.calc.results:
                raise PruneError(f"{path}: {where} has no energy; choose an info key with --target")
            value, forces = atoms.calc.results["energy"], atoms.calc.results.get("forces") if with_forces else None
            if forces is not None and not np.isfinite(forces).all():
                raise PruneError(f"{path}: {where} has NaN or infinite forces")
        elif target in atoms.info:
            value, forces = atoms.info[target], None
        else:
            raise PruneError(f"{path}: {where} has no info key '{target}' (keys: {sorted(atoms.info)})")
        out.append(labelled(atoms, finite(value, path, f"{where} {target}"), forces))
    return out


def split(raw: str | Path, sizes: dict[str, int | None]) -> SplitSpec:
    return SPLIT
