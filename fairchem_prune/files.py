"""Writing outputs safely: an existing output is kept unless ``--force``, and a file appears under
its name only once it is complete."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from fairchem_prune.errors import PruneError


def refuse_existing(path: str | Path, force: bool, option: str = "--force") -> None:
    """PruneError if ``path`` exists and ``force`` is not set."""
    if Path(path).exists() and not force:
        raise PruneError(f"output {path} already exists; choose another path or pass {option} to overwrite it")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; moved onto ``path`` when the block succeeds,
    removed when it fails (an interrupted run leaves no half-written output)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
