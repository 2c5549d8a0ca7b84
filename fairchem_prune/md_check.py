"""Molecular dynamics as a check of a potential beyond its force error ("Forces are not enough", Fu et
al. 2023): NVE runs with ASE's velocity Verlet from the same structures and velocities for each model,
and per model the total-energy drift, the time until the run becomes unstable, the speed, and how far
its distribution of interatomic distances is from the reference model's.

A run is unstable at the first step where an energy or force is not finite, a force exceeds
``force_limit``, or an atom pair bonded at the start (closer than ``bond_factor`` times the sum of
their covalent radii) is stretched past ``stretch`` times its starting length. Units: fs, K, eV, Å;
drift in meV/atom/ps (the slope of a straight-line fit of the total energy per atom against time).
Models whose forces are energy gradients conserve energy up to the integration error; direct-force
models need not, and drift.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from ase import Atoms, units
from ase.data import covalent_radii
from ase.geometry import find_mic
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

from fairchem_prune.errors import PruneError


@dataclass(frozen=True)
class MDSettings:
    steps: int = 500
    timestep: float = 0.5          #: fs
    temperature: float = 300.0     #: K, of the starting velocities
    seed: int = 0
    force_limit: float = 50.0      #: eV/Å
    bond_factor: float = 1.2       #: bonded at the start: closer than this x the covalent radii sum
    stretch: float = 2.0           #: unstable: a starting bond stretched past this x its length
    record_every: int = 5          #: steps between recorded frames (distances, energies)
    rdf_max: float = 6.0           #: Å, range of the distance histogram
    rdf_bins: int = 60


def starting_velocities(atoms: Atoms, settings: MDSettings, index: int = 0) -> np.ndarray:
    """Maxwell-Boltzmann velocities at ``settings.temperature`` (no net momentum or rotation), the same
    for every model: drawn from ``settings.seed`` and the structure's ``index``."""
    atoms = atoms.copy()
    MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperature, rng=np.random.default_rng([settings.seed, index]))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    return atoms.get_velocities()


def _bonds(atoms: Atoms, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (P, 2), starting lengths (P,)) of the atom pairs bonded at the start (minimum image)."""
    distances = atoms.get_all_distances(mic=atoms.pbc.any())
    radii = covalent_radii[atoms.numbers]
    i, j = np.triu_indices(len(atoms), k=1)
    bonded = distances[i, j] < factor * (radii[i] + radii[j])
    return np.stack([i[bonded], j[bonded]], axis=1), distances[i, j][bonded]


def _lengths(atoms: Atoms, pairs: np.ndarray) -> np.ndarray:
    """Lengths (Å, minimum image) of the atom ``pairs`` (P, 2)."""
    vectors = atoms.positions[pairs[:, 1]] - atoms.positions[pairs[:, 0]]
    if atoms.pbc.any():
        vectors, _ = find_mic(vectors, atoms.cell, atoms.pbc)
    return np.linalg.norm(vectors, axis=1)


def distance_histogram(atoms: Atoms, settings: MDSettings) -> np.ndarray:
    """Normalised histogram of the interatomic distances up to ``rdf_max`` (minimum image): the structural
    observable compared between models (a radial distribution function without the density factor,
    which a molecule in vacuum does not have)."""
    distances = atoms.get_all_distances(mic=atoms.pbc.any())[np.triu_indices(len(atoms), k=1)]
    counts, _ = np.histogram(distances, bins=settings.rdf_bins, range=(0.0, settings.rdf_max))
    return counts / max(1, counts.sum())


def run_nve(atoms: Atoms, calculator, settings: MDSettings, velocities: np.ndarray,
            on_step: Callable[[], object] | None = None) -> dict:
    """One NVE run of ``atoms`` under ``calculator`` from ``velocities`` (Å/ASE time unit), calling
    ``on_step()`` after each step. Returns
    ``{"time_fs", "total_energy", "potential_energy"}`` per recorded frame (eV), ``"natoms"``, ``"stable"``,
    ``"unstable_at_fs"`` (None when stable) with ``"reason"``, ``"steps_per_second"`` and
    ``"histogram"`` (mean distance histogram over the recorded frames)."""
    atoms = atoms.copy()
    atoms.calc = calculator
    atoms.set_velocities(velocities)
    bonds, lengths = _bonds(atoms, settings.bond_factor)
    dynamics = VelocityVerlet(atoms, timestep=settings.timestep * units.fs)
    record = {"time_fs": [], "total_energy": [], "potential_energy": []}
    histograms = []
    reason = None
    start = time.perf_counter()
    steps_done = 0
    for step in range(settings.steps + 1):
        if step:
            dynamics.run(1)
            steps_done += 1
            if on_step is not None:
                on_step()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        kinetic = atoms.get_kinetic_energy()
        if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(kinetic)):
            reason = "an energy or force is not finite"
        elif np.abs(forces).max() > settings.force_limit:
            reason = f"a force exceeds {settings.force_limit} eV/Å"
        elif len(bonds):
            if (_lengths(atoms, bonds) > settings.stretch * lengths).any():
                reason = f"a bond stretched past {settings.stretch}x its starting length"
        if reason is not None:
            break
        if step % settings.record_every == 0:
            record["time_fs"].append(step * settings.timestep)
            record["total_energy"].append(float(energy + kinetic))
            record["potential_energy"].append(float(energy))
            histograms.append(distance_histogram(atoms, settings))
    seconds = time.perf_counter() - start
    return {**record, "natoms": len(atoms), "stable": reason is None, "unstable_at_fs": None if reason is None else step * settings.timestep,
            "reason": reason, "steps_per_second": steps_done / seconds if seconds > 0 else math.inf,
            "histogram": np.mean(histograms, axis=0).tolist() if histograms else None}


def drift(run: dict, natoms: int) -> float:
    """Total-energy drift in meV/atom/ps: the slope of a straight line fitted to the recorded total
    energy per atom against time (NaN with fewer than two frames)."""
    t, e = np.asarray(run["time_fs"]), np.asarray(run["total_energy"])
    if len(t) < 2:
        return float("nan")
    slope = np.polyfit(t / 1000.0, e / natoms, 1)[0]  # eV/atom/ps
    return float(1000.0 * slope)


def check_models(models: dict[str, Callable[[], object]], structures: Sequence[Atoms], settings: MDSettings,
                 reference: str | None = None, kinds: dict[str, str] | None = None, progress: bool = True) -> dict:
    """Run every structure under every model (``name -> calculator factory``) from the same velocities.
    Returns ``{"settings", "reference", "models": {name: {"kind", "drift_mev_per_atom_ps", "stable",
    "unstable_at_fs", "reasons", "steps_per_second", "rdf_l1", "runs": [...]}}}``; ``rdf_l1`` is the L1
    distance of the model's distance histogram from the reference model's (the first by default),
    averaged over the structures (0 for the reference; 2 is disjoint). ``progress``: a bar of the steps
    run, all models and structures together (:func:`fairchem_prune.console.progress`)."""
    from fairchem_prune.console import progress as bar_of

    if not models:
        raise PruneError("md-check needs at least one model")
    if not structures:
        raise PruneError("md-check needs at least one structure")
    if settings.steps < 1 or settings.timestep <= 0 or settings.record_every < 1:
        raise PruneError("--steps, --timestep and --record-every must be positive")
    reference = reference or next(iter(models))
    if reference not in models:
        raise PruneError(f"reference model {reference!r} is not one of {list(models)}")
    velocities = [starting_velocities(atoms, settings, i) for i, atoms in enumerate(structures)]
    results = {}
    with bar_of(total=len(models) * len(structures) * settings.steps, desc="md-check", unit="step",
                disable=not progress) as bar:
        for index, (name, factory) in enumerate(models.items()):
            bar.set_description(f"md-check {name} ({index + 1}/{len(models)}): loading", refresh=False)
            calculator = factory()
            bar.set_description(f"md-check {name} ({index + 1}/{len(models)})", refresh=False)
            runs = []
            for atoms, v in zip(structures, velocities):
                start = bar.n
                runs.append(run_nve(atoms, calculator, settings, v, on_step=bar.update))
                bar.update(start + settings.steps - bar.n)  # the steps an unstable run did not take
            drifts = [drift(run, len(atoms)) for run, atoms in zip(runs, structures)]
            unstable = [r["unstable_at_fs"] for r in runs if not r["stable"]]
            results[name] = {
                "kind": (kinds or {}).get(name),
                "drift_mev_per_atom_ps": float(np.nanmean(np.abs(drifts))) if not all(np.isnan(drifts)) else float("nan"),
                "stable": all(r["stable"] for r in runs),
                "unstable_at_fs": min(unstable) if unstable else None,
                "reasons": sorted({r["reason"] for r in runs if r["reason"]}),
                "steps_per_second": float(np.mean([r["steps_per_second"] for r in runs])),
                "runs": runs,
            }
    for name, result in results.items():
        pairs = [(np.asarray(a["histogram"]), np.asarray(b["histogram"]))
                 for a, b in zip(result["runs"], results[reference]["runs"]) if a["histogram"] and b["histogram"]]
        result["rdf_l1"] = float(np.mean([np.abs(a - b).sum() for a, b in pairs])) if pairs else None
    return {"settings": asdict(settings), "reference": reference, "models": results}


def format_table(result: dict) -> str:
    lines = ["| model | forces | drift (meV/atom/ps) | stable | steps / s | distance histogram L1 vs " + result["reference"] + " |",
             "|---|---|---:|---|---:|---:|"]
    for name, m in result["models"].items():
        stable = "stable" if m["stable"] else f"unstable at {m['unstable_at_fs']:.1f} fs ({'; '.join(m['reasons'])})"
        rdf = "-" if m["rdf_l1"] is None else f"{m['rdf_l1']:.3f}"
        lines.append(f"| {name} | {m['kind'] or '-'} | {m['drift_mev_per_atom_ps']:.3f} | {stable} | "
                     f"{m['steps_per_second']:.1f} | {rdf} |")
    return "\n".join(lines)


def plot_energies(result: dict, path) -> None:
    """Total energy per atom (relative to its start) against time, one line per model (first structure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for name, m in result["models"].items():
        run = m["runs"][0]
        if run["time_fs"]:
            e = np.asarray(run["total_energy"])
            ax.plot(run["time_fs"], 1000 * (e - e[0]) / run["natoms"], label=name)
    ax.set(xlabel="time (fs)", ylabel="total energy - start (meV/atom)", title="NVE: energy conservation")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
