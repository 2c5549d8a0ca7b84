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

import torch
from ase import units
from ase.data import atomic_masses


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
