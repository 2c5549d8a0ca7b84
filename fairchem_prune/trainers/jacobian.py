"""Rows of the force Jacobian J = dF/dx ((3N) x (3N) per structure; the negative Hessian for
conservative forces), by vector-Jacobian products: one backward pass gives one row per structure of a
batch, never the whole matrix (Amin, Raja, Krishnapriyan, ICLR 2025, match a few sampled Hessian rows
of the teacher in distillation)."""

from __future__ import annotations

import torch


def sample_rows(batch, free: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B,) flat indices into ``forces.view(-1)``: one free atom and Cartesian component per structure,
    uniformly drawn. A structure without free atoms gets one of its atoms."""
    rows = []
    start = 0
    for count in batch.natoms.tolist():
        candidates = torch.nonzero(free[start:start + count].cpu()).flatten()
        if candidates.numel() == 0:
            candidates = torch.arange(count)
        atom = start + int(candidates[torch.randint(candidates.numel(), (1,), generator=generator)])
        rows.append(3 * atom + int(torch.randint(3, (1,), generator=generator)))
        start += count
    return torch.tensor(rows, device=free.device)


def force_jacobian_rows(forces: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor,
                        create_graph: bool = False) -> torch.Tensor:
    """(N_atoms, 3): the gradient of ``sum_s forces.view(-1)[rows[s]]`` with respect to ``pos``. Structures
    do not interact, so the block of structure s is row ``rows[s]`` of its force Jacobian (eV/Å² when
    forces are in eV/Å). ``forces`` must have been computed from ``pos`` (``pos.requires_grad``)."""
    (gradient,) = torch.autograd.grad(forces.reshape(-1)[rows].sum(), pos, create_graph=create_graph,
                                      retain_graph=True)
    return gradient
