"""Teacher-labelled augmentation for distillation: structures that no reference method labelled, made
on the fly from each training batch and labelled by the frozen teacher (its outputs are the targets).

* rattle: every free atom of a random share of the structures displaced by Gaussian noise;
* teacher MD: a random share of the structures replaced by the last frame of a short velocity-Verlet
  run driven by the teacher's own forces, from Maxwell-Boltzmann velocities (Ekström Kelvinius et al.,
  NeurIPS 2023, augment the distillation set in the same spirit).

Positions only change; cells, fixed atoms, element types and graphs-to-be are those of the batch.
Units: Å, eV/Å, fs, K (ASE's unit system, :mod:`ase.units`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from ase import units
from ase.data import atomic_masses

from fairchem_prune.errors import PruneError


@dataclass
class Augmentation:
    """The teacher-labelled structures each training batch gets (both hosts' distillation options):
    shares of the batch's structures, Å, fs, K."""

    rattle_fraction: float = 0.0
    rattle_sigma: float = 0.05
    md_fraction: float = 0.0
    md_steps: int = 5
    md_timestep: float = 1.0
    md_temperature: float = 300.0

    @property
    def augments(self) -> bool:
        """Whether batches get any (rattle or teacher MD)."""
        return self.rattle_fraction > 0 or self.md_fraction > 0

    def check(self, name: Callable[[str], str]) -> None:
        """PruneError naming (as ``name(field)``: ``--rattle-fraction``, ``task.distill.rattle_fraction``)
        the first setting out of range."""
        for key in ("rattle_fraction", "md_fraction"):
            if not 0 <= getattr(self, key) <= 1:
                raise PruneError(f"{name(key)} is a share of the structures, between 0 and 1; got {getattr(self, key)}")
        for key in ("rattle_sigma", "md_steps", "md_timestep", "md_temperature"):
            if getattr(self, key) <= 0:
                raise PruneError(f"{name(key)} must be positive, got {getattr(self, key)}")

    def apply(self, batch, forces: Callable[[object], torch.Tensor], generator: torch.Generator):
        """``batch`` with teacher MD (under ``forces(batch)``, the teacher's (N_atoms, 3) eV/Å) and rattle
        applied, drawn from ``generator``."""
        if self.md_fraction:
            batch = teacher_md(batch, forces, self.md_fraction, self.md_steps, self.md_timestep,
                               self.md_temperature, generator)
        if self.rattle_fraction:
            batch = rattle(batch, self.rattle_fraction, self.rattle_sigma, generator)
        return batch


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The random stream of one training step on one rank: the same after a resume, different on each rank."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 131 + rank)


def chosen_atoms(batch, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """(N_atoms,) bool: the free atoms of a random ``fraction`` of the batch's structures."""
    structures = torch.rand(batch.natoms.numel(), generator=generator) < fraction
    return structures.to(batch.pos.device)[batch.batch] & (batch.fixed == 0)


def rattle(batch, fraction: float, sigma: float, generator: torch.Generator):
    """A copy of ``batch`` with the free atoms of a random ``fraction`` of its structures displaced by
    N(0, ``sigma``²) Å in each Cartesian component."""
    atoms = chosen_atoms(batch, fraction, generator)
    noise = torch.randn(batch.pos.shape, generator=generator).to(batch.pos) * sigma
    moved = batch.clone()
    moved.pos = batch.pos + noise * atoms[:, None]
    return moved


def teacher_md(batch, forces: Callable[[object], torch.Tensor], fraction: float, steps: int, timestep: float,
               temperature: float, generator: torch.Generator):
    """A copy of ``batch`` in which a random ``fraction`` of the structures moved ``steps`` velocity-Verlet
    steps of ``timestep`` fs from velocities drawn at ``temperature`` K, under ``forces(batch)`` ((N_atoms, 3)
    eV/Å, the teacher's); fixed atoms and the other structures stay. Costs ``steps`` force evaluations."""
    atoms = chosen_atoms(batch, fraction, generator)[:, None]
    mass = torch.as_tensor(atomic_masses, dtype=batch.pos.dtype)[batch.atomic_numbers.long().cpu()].to(batch.pos)[:, None]
    velocity = torch.randn(batch.pos.shape, generator=generator).to(batch.pos) * torch.sqrt(units.kB * temperature / mass)
    velocity = velocity * atoms
    dt = timestep * units.fs
    moved = batch.clone()
    acceleration = forces(moved) / mass * atoms
    for step in range(steps):
        moved.pos = moved.pos + velocity * dt + 0.5 * acceleration * dt**2
        if step + 1 < steps:
            new = forces(moved) / mass * atoms
            velocity = velocity + 0.5 * (acceleration + new) * dt
            acceleration = new
    return moved
