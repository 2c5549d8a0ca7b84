"""Which blocks a reduced model keeps: the choice a config or the slicing tool makes (the first b',
or an explicit subset), validated against the source's b blocks, the kept blocks' origin, and the
report of a slicing (both hosts)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fairchem_prune.errors import PruneError


def block_list(text: str) -> list[int]:
    """Parse ``0,1,2,4`` into ``[0, 1, 2, 4]`` (the ``--kept-blocks`` option of either host)."""
    try:
        return [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices like 0,1,2,4, got {text!r}") from None


def count_list(text: str) -> list[int]:
    """Parse ``4,3,2`` (or ``4 3 2``) into ``[4, 3, 2]`` (the ``--blocks`` of compress, either host)."""
    try:
        return [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected block counts such as 4,3,2, got {text!r}") from None


def resolve_kept_blocks(
    num_source_blocks: int,
    num_blocks_kept: int | None = None,
    kept_blocks: Sequence[int] | None = None,
    block_kind: str = "",
) -> list[int]:
    """0-based indices of the source interaction blocks to keep, in order.

    Give ``num_blocks_kept`` (keep the first b') or ``kept_blocks`` (an explicit strictly increasing
    subset), or neither (keep all). Raises PruneError on anything else; ``block_kind`` (e.g.
    "transformer") names the blocks in its messages.
    """
    if num_blocks_kept is not None and kept_blocks is not None:
        raise PruneError(
            "give either num_blocks_kept or kept_blocks, not both "
            f"(got num_blocks_kept={num_blocks_kept}, kept_blocks={list(kept_blocks)})"
        )
    blocks = f"{block_kind} blocks" if block_kind else "blocks"
    valid = f"the source model has {num_source_blocks} {blocks} (0-{num_source_blocks - 1})"
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
        raise PruneError("kept_blocks is empty: keep at least one block")
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
    block_kind: str = "",
) -> tuple[list[int], list[int]]:
    """(kept, origin): the kept source block indices (:func:`resolve_kept_blocks`) and their indices
    in the original unreduced model, given the source's own ``source_blocks`` (default: identity)."""
    kept = resolve_kept_blocks(num_source_blocks, num_blocks_kept, kept_blocks, block_kind)
    original = list(source_blocks) if source_blocks is not None else list(range(num_source_blocks))
    if len(original) != num_source_blocks:
        raise PruneError(f"source_blocks {original} must list {num_source_blocks} block indices")
    return kept, [original[k] for k in kept]


def kept_for_counts(counts: Sequence[int], scores: Sequence[float] | None = None) -> dict[int, list[int]]:
    """The blocks (0-based, in order) each block count k keeps: the first k, or with ``scores`` (one
    relevance score per block) the k most relevant (``compress --order relevance``)."""
    if scores is None:
        return {k: list(range(k)) for k in counts}
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
    return {k: sorted(ranked[:k]) for k in counts}


@dataclass
class SliceReport:
    """What :func:`slice_checkpoint` did."""

    source: Path
    output: Path
    kept_blocks: list[int]
    source_blocks: list[int]
    num_source_blocks: int
    params_before: int
    params_after: int
    weights: str  # which weights were sliced: "EMA", "state_dict", "raw and EMA"
    mlp_init: str | None  # None: the architecture has nothing to choose
    block_kind: str = "interaction"

    def summary(self) -> str:
        change = 100.0 * (self.params_after - self.params_before) / self.params_before
        return "\n".join(
            [
                f"source      {self.source}  ({self.num_source_blocks} {self.block_kind} blocks, "
                f"{self.weights} weights)",
                f"kept blocks {self.kept_blocks}  (original model's blocks {self.source_blocks})"
                + (f", first FinalMLP layer: {self.mlp_init}" if self.mlp_init else ""),
                f"parameters  {self.params_before:,} -> {self.params_after:,}  ({change:+.1f}%)",
                f"written     {self.output}",
            ]
        )
