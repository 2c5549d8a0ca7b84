"""Which interaction blocks a reduced model keeps, and how the FinalMLP input is partitioned.

GemNet-OC feeds its FinalMLP (``out_mlp_E`` for atoms, ``out_mlp_F`` for edges) with the
concatenation f = concat(f_1, ..., f_{b+1}) of the output-block features after the embedding
(f_1) and after each of the b interaction blocks (f_2 .. f_{b+1}):

    f: (|V|, d_atom * (b + 1)) for the energy branch, (|E|, d_edge * (b + 1)) for the force branch.

Partition p (0-based) of f is columns [p*d, (p+1)*d). Interaction block k (0-based) produces
partition k + 1. The embedding partition 0 is always kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from fairchem_prune.errors import PruneError


def resolve_kept_blocks(
    num_source_blocks: int,
    num_blocks_kept: int | None = None,
    kept_blocks: Sequence[int] | None = None,
) -> list[int]:
    """0-based indices of the source interaction blocks to keep, in order.

    Give ``num_blocks_kept`` (keep the first b') or ``kept_blocks`` (an explicit strictly increasing
    subset), or neither (keep all). Raises PruneError on anything else.
    """
    if num_blocks_kept is not None and kept_blocks is not None:
        raise PruneError(
            "give either num_blocks_kept or kept_blocks, not both "
            f"(got num_blocks_kept={num_blocks_kept}, kept_blocks={list(kept_blocks)})"
        )
    valid = f"the source model has {num_source_blocks} interaction blocks (0-{num_source_blocks - 1})"
    if kept_blocks is None:
        if num_blocks_kept is None:
            return list(range(num_source_blocks))
        if isinstance(num_blocks_kept, bool) or not isinstance(num_blocks_kept, int):
            raise PruneError(f"num_blocks_kept must be an integer, got {num_blocks_kept!r}")
        if not 1 <= num_blocks_kept <= num_source_blocks:
            raise PruneError(f"cannot keep {num_blocks_kept} blocks: {valid}; keep 1 to {num_source_blocks}")
        return list(range(num_blocks_kept))

    kept = list(kept_blocks)
    if not kept:
        raise PruneError("kept_blocks is empty: keep at least one interaction block")
    if any(isinstance(k, bool) or not isinstance(k, int) for k in kept):
        raise PruneError(f"kept_blocks must be integers, got {kept}")
    bad = [k for k in kept if not 0 <= k < num_source_blocks]
    if bad:
        raise PruneError(f"kept_blocks {kept}: block(s) {bad} do not exist; {valid}")
    if len(set(kept)) != len(kept):
        raise PruneError(f"kept_blocks {kept} has duplicate indices; list each block once")
    if kept != sorted(kept):
        raise PruneError(f"kept_blocks {kept} is not in increasing order; blocks run in source order, write {sorted(kept)}")
    return kept


def kept_with_origin(
    num_source_blocks: int,
    num_blocks_kept: int | None = None,
    kept_blocks: Sequence[int] | None = None,
    source_blocks: Sequence[int] | None = None,
) -> tuple[list[int], list[int]]:
    """(kept, origin): the kept source block indices (:func:`resolve_kept_blocks`) and their indices
    in the original unreduced model, given the source's own ``source_blocks`` (default: identity)."""
    kept = resolve_kept_blocks(num_source_blocks, num_blocks_kept, kept_blocks)
    original = list(source_blocks) if source_blocks is not None else list(range(num_source_blocks))
    if len(original) != num_source_blocks:
        raise PruneError(f"source_blocks {original} must list {num_source_blocks} block indices")
    return kept, [original[k] for k in kept]


def kept_partitions(kept: Sequence[int]) -> list[int]:
    """FinalMLP input partitions that survive: the embedding (0) and k + 1 for each kept block k."""
    return [0] + [k + 1 for k in kept]
