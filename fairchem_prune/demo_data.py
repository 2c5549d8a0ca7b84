"""Small data sets with real physics for the demo and the tests.

``emt_slabs``: periodic fcc(111) metal slabs with one adsorbate (H, C, N, O on Cu, Pt, Ni, Al, Pd,
Ag, Au), rattled, labelled with ASE's EMT potential (energies in eV, forces in eV/Å). Tags follow
OC20: 0 sub-surface, 1 surface, 2 adsorbate; the bottom layer is fixed.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

EMT_METALS = ("Cu", "Pt", "Ni", "Al", "Pd", "Ag", "Au")
ADSORBATES = ("H", "C", "N", "O")
SITES = ("ontop", "bridge", "fcc", "hcp")


def emt_slab(rng: np.random.Generator) -> Atoms:
    """One rattled 2x2x3 slab with an adsorbate, with EMT energy and forces attached."""
    metal = EMT_METALS[rng.integers(len(EMT_METALS))]
    slab = fcc111(metal, size=(2, 2, 3), vacuum=7.0)
    layer = slab.get_tags()  # ASE: 1 = top layer ... 3 = bottom layer
    add_adsorbate(slab, ADSORBATES[rng.integers(len(ADSORBATES))], float(rng.uniform(1.0, 2.2)),
                  SITES[rng.integers(len(SITES))])
    slab.set_tags(np.concatenate([np.where(layer == 1, 1, 0), [2]]))
    slab.set_constraint(FixAtoms(indices=np.flatnonzero(layer == layer.max())))
    slab.positions += rng.normal(0.0, rng.uniform(0.03, 0.15), size=slab.positions.shape)
    slab.calc = EMT()
    energy, forces = slab.get_potential_energy(), slab.get_forces(apply_constraint=False)
    slab.calc = SinglePointCalculator(slab, energy=energy, forces=forces)
    return slab


def emt_slabs(count: int, seed: int = 0) -> list[Atoms]:
    """``count`` labelled slabs, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    return [emt_slab(rng) for _ in range(count)]
