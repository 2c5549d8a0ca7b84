"""Small data sets with real physics for the demo and the tests.

``emt_slabs``: periodic fcc(111) metal slabs with one adsorbate (H, C, N, O on Cu, Pt, Ni, Al, Pd,
Ag, Au), rattled, labelled with ASE's EMT potential (energies in eV, forces in eV/Å). Tags follow
OC20: 0 sub-surface, 1 surface, 2 adsorbate; the bottom layer is fixed.

``xtb_md``: conformers of a molecule sampled by Langevin MD on the GFN2-xTB surface (``tblite``),
energies in eV, forces in eV/Å. tblite links a newer OpenMP runtime than the one torch loads, so xTB
runs in worker processes started fresh (``xtb_pool``), single-threaded (bit-reproducible); this
module imports neither torch nor tblite at the top.

``make_demo_data``: the embedded demo data set (see its docstring).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.collections import g2, s22
from ase.constraints import FixAtoms, FixCom

from fairchem_prune.console import progress
from fairchem_prune.datasets.qm9 import PROPERTIES as QM9_PROPERTIES
from fairchem_prune.datasets.raw import JMP_TAG
from fairchem_prune.errors import PruneError

EMT_METALS = ("Cu", "Pt", "Ni", "Al", "Pd", "Ag", "Au")
ADSORBATES = ("H", "C", "N", "O")
SITES = ("ontop", "bridge", "fcc", "hcp")
XTB_METHOD = "GFN2-xTB"
#: the rMD17-format molecule (in ASE's G2 set) and the MD22-format one (ASE's S22 set)
RMD17_MOLECULE = "CH3CH2OH"
MD22_COMPLEX = "Adenine-thymine_Watson-Crick_complex"


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


def g2_molecules() -> list[str]:
    """Names of ASE's G2 molecules made of H, C, N, O, F with at least 3 atoms (82 molecules)."""
    return [name for name in g2.names if len(g2[name]) >= 3 and set(g2[name].get_chemical_symbols()) <= set("HCNOF")]


def xtb_single_point(numbers: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
    """A fresh GFN2-xTB calculation of a neutral closed-shell molecule (positions in Å):
    ``energy`` (eV), ``forces`` (n_atoms x 3, eV/Å), ``dipole`` (3, e·Å). Run it in ``xtb_pool``."""
    from tblite.ase import TBLite

    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = TBLite(method=XTB_METHOD, verbosity=0)
    return {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "dipole": atoms.get_dipole_moment()}


def xtb_md(numbers: np.ndarray, positions: np.ndarray, frames: int, interval: int, temperature_K: float,
           seed: int, timestep_fs: float = 0.5) -> dict[str, np.ndarray]:
    """Langevin MD (friction 0.01/fs) on the GFN2-xTB surface from ``positions`` (Å), Maxwell-
    Boltzmann start at ``temperature_K``; one frame every ``interval`` steps after ``interval``
    steps of equilibration. Returns ``positions`` (frames x n x 3, Å), ``energy`` (frames, eV),
    ``forces`` (frames x n x 3, eV/Å), each frame labelled by ``xtb_single_point``. Run it in
    ``xtb_pool``."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from tblite.ase import TBLite

    rng = np.random.RandomState(seed)
    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = TBLite(method=XTB_METHOD, verbosity=0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    with np.errstate(divide="ignore", invalid="ignore"):  # linear molecules: one zero moment of inertia
        ZeroRotation(atoms)
    atoms.set_constraint(FixCom())
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K, friction=0.01 / units.fs,
                   fixcm=False, rng=rng)
    dyn.run(interval)
    out = {"positions": [], "energy": [], "forces": []}
    for _ in range(frames):
        dyn.run(interval)
        labels = xtb_single_point(numbers, atoms.positions)  # fresh: no SCF guess from the previous step
        out["positions"].append(atoms.get_positions())
        out["energy"].append(labels["energy"])
        out["forces"].append(labels["forces"])
    return {key: np.array(value) for key, value in out.items()}


def _single_threaded() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def xtb_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """Fresh single-threaded worker processes for ``xtb_md`` / ``xtb_single_point`` (default: one
    per CPU core, at most 2)."""
    workers = workers or min(2, os.cpu_count() or 1)
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_single_threaded)


@dataclass(frozen=True)
class DemoSize:
    """How much ``make_demo_data`` generates."""

    g2_frames: int        #: xTB MD frames per G2 molecule (pre-training mix)
    slabs: int            #: EMT slabs (pre-training mix)
    rmd17_frames: int     #: frames of the rMD17-format ethanol trajectory
    md22_frames: int      #: frames of the MD22-format adenine-thymine trajectory
    qm9_conformers: int   #: conformers per G2 molecule in the QM9-style set
    g2_molecules: int = 82  #: the first this many G2 molecules are used


SIZES = {
    "small": DemoSize(g2_frames=6, slabs=500, rmd17_frames=1200, md22_frames=240, qm9_conformers=3),
    # the default: medium's pre-training mix (the same structures for a seed) with small's downstream files
    "standard": DemoSize(g2_frames=30, slabs=2500, rmd17_frames=1200, md22_frames=240, qm9_conformers=3),
    "medium": DemoSize(g2_frames=30, slabs=2500, rmd17_frames=3000, md22_frames=1000, qm9_conformers=12),
}
#: fraction of each pre-training source held out for validation
VAL_FRACTION = 0.1
MANIFEST = "manifest.json"


#: ``writer(path, source, structures, sids, force)``: writes one source's split (``path`` without
#: suffix) in a host's format, returns the number written
SourceWriter = Callable[[Path, str, list[Atoms], list[int], bool], int]


def write_lmdb_source(path: Path, source: str, structures: list[Atoms], sids: list[int], force: bool) -> int:
    """fairchem 1.x: ``path.lmdb`` of ``AtomsToGraphs`` data (``sid`` = index in the source)."""
    from fairchem_prune.datasets.lmdb_io import atoms_to_data, write_lmdb  # imports torch: not in the xTB workers

    data = (atoms_to_data(atoms, sid=sid) for atoms, sid in zip(structures, sids))
    return write_lmdb(path.with_suffix(".lmdb"), data, overwrite=force, progress=True, total=len(structures))


def make_demo_data(out: str | Path, size: str | DemoSize = "standard", seed: int = 0, force: bool = False,
                   workers: int | None = None, writer: SourceWriter = write_lmdb_source) -> dict[str, int]:
    """Write the demo data under ``out`` (deterministic for ``seed``); returns counts per part.

    * ``pretrain/{train,val}/{xtb_molecules,emt_slabs}.lmdb`` (``writer``'s format; default fairchem
      1.x LMDB): S2EF pre-training mix, one data set per
      source; G2 molecule conformers from 500 K xTB MD (no cell, no PBC, JMP's tag 2 on every atom)
      and EMT slabs with adsorbates (periodic, OC20's tags 0 / 1 / 2), energies in eV, forces in eV/Å.
    * ``raw/rmd17_ethanol.npz``: rMD17 format (``nuclear_charges``, ``coords``, ``energies``,
      ``forces``; kcal/mol), xTB MD of ethanol at 500 K, one frame every 5 fs.
    * ``raw/md22_adenine-thymine.npz``: MD22 format (``z``, ``R``, ``E``, ``F``; kcal/mol), xTB MD of
      the adenine-thymine pair at 400 K.
    * ``raw/qm9/dsgdb9nsd_NNNNNN.xyz``: QM9 format; G2 molecules and rattled conformers, U0 = xTB
      energy (hartree), mu from the xTB dipole, A/B/C from the geometry, the other properties NaN.
    * ``manifest.json``: the size, the seed and the counts (``demo_manifest`` reads it).
    """
    size = SIZES[size] if isinstance(size, str) else size
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise PruneError(f"{out} exists and is not empty; pass --force to overwrite or choose another --out")
    names = g2_molecules()[: size.g2_molecules]
    seeds = iter(np.random.SeedSequence(seed).generate_state(len(names) + 6))
    with xtb_pool(workers) as pool:
        calls = {}  # job -> its xTB calculations (MD steps and single points): the unit of the progress bar

        def md(atoms, frames, interval, temperature):
            job = pool.submit(xtb_md, atoms.numbers, atoms.positions, frames, interval, temperature, int(next(seeds)))
            calls[job] = len(atoms) * ((frames + 1) * interval + frames)
            return job

        md22 = md(s22[MD22_COMPLEX], size.md22_frames, 4, 400.0)  # the longest jobs first
        rmd17 = md(g2[RMD17_MOLECULE], size.rmd17_frames, 10, 500.0)
        pretrain = [md(g2[name], size.g2_frames, 20, 500.0) for name in names]
        rng = np.random.RandomState(int(next(seeds)))
        conformers = [g2[name].copy() for name in names for _ in range(size.qm9_conformers)]
        for i, atoms in enumerate(conformers):
            if i % size.qm9_conformers:
                atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        qm9 = [pool.submit(xtb_single_point, a.numbers, a.positions) for a in conformers]
        calls.update({job: len(a) for job, a in zip(qm9, conformers)})
        with progress(total=sum(calls.values()), desc=f"xTB labels ({len(calls)} jobs)",
                      bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]") as bar:
            for job in as_completed(calls):
                job.result()  # a failed job fails here, not after the others
                bar.update(calls[job])

        molecules = []
        for name, job in zip(names, pretrain):
            result = job.result()
            for pos, energy, forces in zip(result["positions"], result["energy"], result["forces"]):
                atoms = Atoms(numbers=g2[name].numbers, positions=pos, tags=np.full(len(pos), JMP_TAG))
                atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
                molecules.append(atoms)
        slabs = emt_slabs(size.slabs, seed=int(next(seeds)))
        counts = {}
        for source, structures in (("xtb_molecules", molecules), ("emt_slabs", slabs)):
            order = np.random.RandomState(int(next(seeds))).permutation(len(structures))
            n_val = max(1, int(VAL_FRACTION * len(structures)))
            for split, index in (("val", order[:n_val]), ("train", order[n_val:])):
                counts[f"pretrain/{split}/{source}"] = writer(out / "pretrain" / split / source, source,
                                                              [structures[i] for i in index], [int(i) for i in index],
                                                              force)
        raw = out / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        _write_rmd17(raw / "rmd17_ethanol.npz", g2[RMD17_MOLECULE].numbers, rmd17.result())
        _write_md22(raw / "md22_adenine-thymine.npz", s22[MD22_COMPLEX].numbers, md22.result(), "adenine-thymine")
        for i, (atoms, job) in enumerate(zip(conformers, qm9), 1):
            _write_qm9(raw / "qm9" / f"dsgdb9nsd_{i:06d}.xyz", i, atoms, job.result())
    counts.update({"raw/rmd17_ethanol": size.rmd17_frames, "raw/md22_adenine-thymine": size.md22_frames,
                   "raw/qm9": len(conformers)})
    manifest = {"size": asdict(size), "seed": seed, "counts": counts}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return counts


def demo_manifest(root: str | Path) -> dict:
    """The ``manifest.json`` of a demo data folder (``{"size", "seed", "counts"}``)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise PruneError(f"{root} is not a demo data folder (no {MANIFEST}); write one with tools/make_demo_data.py")
    return json.loads(path.read_text())


def _write_rmd17(path: Path, numbers: np.ndarray, md: dict) -> None:
    kcal = units.kcal / units.mol
    np.savez(path, nuclear_charges=numbers, coords=md["positions"], energies=md["energy"] / kcal,
             forces=md["forces"] / kcal)


def _write_md22(path: Path, numbers: np.ndarray, md: dict, name: str) -> None:
    kcal = units.kcal / units.mol
    np.savez(path, z=numbers, R=md["positions"], E=(md["energy"] / kcal)[:, None], F=md["forces"] / kcal,
             name=np.array(name), theory=np.array(XTB_METHOD), e_unit=np.array("kcal/mol"), r_unit=np.array("Ang"))


def _qm9_number(value: float) -> str:
    """QM9 writes numbers like Mathematica: ``1.5*^-6``."""
    return repr(float(value)).replace("e", "*^")


def _write_qm9(path: Path, index: int, atoms: Atoms, xtb: dict) -> None:
    """One QM9 ``.xyz``: atom count; ``gdb ID`` and the 15 properties; ``symbol x y z charge`` lines;
    harmonic frequencies; SMILES pair; InChI pair (the last three are placeholders here)."""
    inertia = np.sort(atoms.get_moments_of_inertia()) * units._amu * 1e-20  # kg m^2, ascending
    properties = {name: units._hplanck / (8 * np.pi**2 * i) / 1e9 if i > 1e-50 else np.nan  # GHz, A >= B >= C
                  for name, i in zip(("A", "B", "C"), inertia)}
    properties["mu"] = float(np.linalg.norm(xtb["dipole"]) / units.Debye)
    properties["U0"] = xtb["energy"] / units.Hartree
    header = ["gdb", str(index)] + [_qm9_number(properties.get(name, np.nan)) for name in QM9_PROPERTIES]
    lines = [str(len(atoms)), "\t".join(header)]
    lines += ["\t".join([s, *map(_qm9_number, p), "0.0"]) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    lines += ["\t".join(["0.0"] * max(1, 3 * len(atoms) - 6)), f"{atoms.get_chemical_formula()}\t{atoms.get_chemical_formula()}",
              f"InChI=1S/{atoms.get_chemical_formula()}\tInChI=1S/{atoms.get_chemical_formula()}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
