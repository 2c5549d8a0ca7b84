"""Small LMDBs in the layout of OC20's S2EF splits, with EMT physics: each system (``sid``) is an
adsorbate on a fcc(111) slab (tags 0 sub-surface, 1 surface, 2 adsorbate; the bottom layer fixed), its
frames (``fid``) the steps of a short BFGS relaxation; targets stored under OC20's names ``y`` (eV) and
``force`` (eV/Å), and left out, as in OC20's test splits, with ``targets=False``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.emt import EMT
from ase.optimize import BFGS
from fairchem.core.preprocessing import AtomsToGraphs

from fairchem_prune.datasets.lmdb_io import write_lmdb
from fairchem_prune.demo.generation import emt_slab


def relaxation_frames(seed: int, frames: int) -> list:
    """The first ``frames`` steps of a BFGS relaxation of one rattled EMT slab with an adsorbate."""
    atoms = emt_slab(np.random.default_rng(seed))
    atoms.calc = EMT()
    trajectory = []
    optimizer = BFGS(atoms, logfile=None)
    for _ in range(frames):
        trajectory.append(atoms.copy())
        trajectory[-1].calc = None
        trajectory[-1].info["energy"] = atoms.get_potential_energy()
        trajectory[-1].arrays["emt_forces"] = atoms.get_forces(apply_constraint=False)
        optimizer.run(fmax=0.0, steps=1)
    return trajectory


def write_s2ef_split(path: str | Path, systems: int, frames: int, seed: int, targets: bool = True) -> Path:
    """``path`` (an LMDB file): ``systems`` relaxations of ``frames`` frames each; sids are large
    random integers, as OC20's are."""
    a2g = AtomsToGraphs(r_edges=False, r_pbc=True, r_energy=False, r_forces=False, r_fixed=True)
    sids = np.random.default_rng(seed).choice(2_000_000, size=systems, replace=False)

    def entries():
        for system, sid in enumerate(sids):
            for fid, atoms in enumerate(relaxation_frames(seed * 1000 + system, frames)):
                data = a2g.convert(atoms, sid=int(sid))
                data.fid = fid
                if targets:
                    data.y = float(atoms.info["energy"])
                    data.force = torch.tensor(atoms.arrays["emt_forces"], dtype=torch.float32)
                yield data

    write_lmdb(path, entries())
    return Path(path)
