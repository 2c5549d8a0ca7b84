"""Train/val/test splits: sizes given as counts, fractions of the file or "the rest", drawn from one
seeded permutation (``np.random.RandomState(seed).permutation``, as JMP's fine-tuning scripts do)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairchem_prune.errors import PruneError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSpec:
    """Default size of each split: an ``int`` count, a ``float`` fraction of the structures in the
    file (rounded down), or ``None`` for all structures not in the other two (at most one)."""

    train: int | float | None
    val: int | float | None
    test: int | float | None


def split_sizes(n: int, spec: SplitSpec, overrides: dict[str, int | None], source: str) -> dict[str, int]:
    """Counts of ``train``/``val``/``test`` for ``n`` structures; ``overrides`` (counts, ``None`` =
    default) replace the defaults. Too few structures is an error, never a smaller split."""
    sizes: dict[str, int | None] = {}
    for name in SPLITS:
        value = overrides.get(name)
        if value is None:
            value = getattr(spec, name)
            value = int(value * n) if isinstance(value, float) else value
        elif value < 1:
            raise PruneError(f"--{name}-size must be at least 1, got {value}")
        sizes[name] = value
    fixed = sum(v for v in sizes.values() if v is not None)
    rest = [name for name, v in sizes.items() if v is None]
    if rest:
        sizes[rest[0]] = n - fixed
    if fixed > n or any(v < 1 for v in sizes.values()):
        wanted = ", ".join(f"{name} {'rest' if name in rest else v}" for name, v in sizes.items())
        raise PruneError(f"{source} holds {n} structures, too few for the split ({wanted}); "
                         "pass smaller --train-size/--val-size/--test-size")
    return sizes  # type: ignore[return-value]


def split_indices(n: int, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint index arrays into ``range(n)``: train, val and test are consecutive slices of
    ``RandomState(seed).permutation(n)``."""
    order = np.random.RandomState(seed).permutation(n)
    bounds = np.cumsum([0] + [sizes[name] for name in SPLITS])
    return {name: order[bounds[i]:bounds[i + 1]] for i, name in enumerate(SPLITS)}
