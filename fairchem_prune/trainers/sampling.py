"""Batches drawn across several data sources with uniform or temperature-balanced probabilities.

JMP pre-trains on four upstream sets of very different sizes and samples source s with probability

    p_s = n_s^(1/T) / sum_r n_r^(1/T)

(T = 1: proportional to size, as plain shuffling; T -> inf: uniform). A fairchem LMDB folder with one
``.lmdb`` per source is one dataset here; the source of a sample is the file it comes from.

The global order of an epoch depends only on (seed, epoch): each step draws one global batch of
``batch_size * num_replicas`` samples (the source of each slot from p, then the next sample of a
per-source shuffled stream) and rank r takes the r-th slice. So N ranks with batch B see, step by step,
exactly the samples one rank sees with batch N*B, and a resumed epoch replays the same order.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fairchem_prune.errors import PruneError

SAMPLING_CHOICES = ("proportional", "uniform", "temperature")


def source_ids(dataset) -> tuple[np.ndarray, list[str]]:
    """Source index of each sample of a fairchem (Subset of an) LMDB dataset, and the source names
    (the ``.lmdb`` file stems of a folder ``src``; one source for a single file)."""
    base = getattr(dataset, "dataset", dataset)
    indices = np.asarray(getattr(dataset, "indices", range(len(dataset))))
    path = Path(base.config["src"])
    if path.is_file():
        return np.zeros(len(indices), dtype=np.int64), [path.stem]
    cumulative = base._keylen_cumulative
    ids = np.array([bisect.bisect(cumulative, int(i)) for i in indices], dtype=np.int64)
    return ids, [p.stem for p in sorted(path.glob("*.lmdb"))]


def source_probabilities(sizes: np.ndarray, sampling: str, temperature: float = 2.0) -> np.ndarray:
    """p_s for source sizes n_s (see module docstring)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if sampling == "proportional":
        weights = sizes
    elif sampling == "uniform":
        weights = (sizes > 0).astype(np.float64)
    elif sampling == "temperature":
        if temperature <= 0:
            raise PruneError(f"sampling temperature must be positive, got {temperature}")
        weights = np.where(sizes > 0, sizes ** (1.0 / temperature), 0.0)
    else:
        raise PruneError(f"sampling must be one of {SAMPLING_CHOICES}, got {sampling!r}")
    return weights / weights.sum()


class SourceBalancedBatchSampler:
    """Batch sampler with fairchem's sampler interface (``set_epoch_and_start_iteration``).

    Args:
        sources: (N,) source index of each sample.
        batch_size: samples per batch on this rank.
        num_replicas, rank: data-parallel world size and this rank.
        steps_per_epoch: batches per epoch.
        probabilities: (S,) source probabilities p_s.
        seed: base seed; the order of epoch e depends on (seed, e) only.
    """

    def __init__(self, sources: np.ndarray, batch_size: int, num_replicas: int, rank: int,
                 steps_per_epoch: int, probabilities: np.ndarray, seed: int = 0) -> None:
        self.members = [np.flatnonzero(sources == s) for s in range(len(probabilities))]
        self.batch_size, self.num_replicas, self.rank = batch_size, num_replicas, rank
        self.steps_per_epoch = steps_per_epoch
        self.probabilities = np.asarray(probabilities, dtype=np.float64)
        self.seed = seed
        self.epoch, self.start_iteration = 0, 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch_and_start_iteration(self, epoch: int, start_iteration: int) -> None:
        self.epoch, self.start_iteration = epoch, start_iteration

    def set_epoch(self, epoch: int) -> None:
        self.set_epoch_and_start_iteration(epoch, 0)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        streams = [rng.permutation(m) for m in self.members]
        position = [0] * len(streams)
        global_batch = self.batch_size * self.num_replicas
        for step in range(self.steps_per_epoch):
            batch = []
            for s in rng.choice(len(streams), size=global_batch, p=self.probabilities):
                if position[s] == len(streams[s]):
                    streams[s], position[s] = rng.permutation(self.members[s]), 0
                batch.append(int(streams[s][position[s]]))
                position[s] += 1
            if step >= self.start_iteration:
                yield batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
