"""Writing outputs safely: an existing output is kept unless ``--force``, and a file appears under
its name only once it is complete."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from fairchem_prune.errors import PruneError


def refuse_existing(path: str | Path, force: bool, option: str = "--force") -> None:
    """PruneError if ``path`` exists and ``force`` is not set."""
    if Path(path).exists() and not force:
        raise PruneError(f"output {path} already exists; choose another path or pass {option} to overwrite it")


def check_output(source: Path, output: Path, force: bool, what: str) -> None:
    """Raise PruneError unless ``output`` may receive the ``what`` (e.g. "sliced model") written
    from ``source``: not the input, not an existing file without ``force``, in an existing folder."""
    if output.exists() and source.exists() and output.resolve() == source.resolve():
        raise PruneError(f"output {output} is the input checkpoint; write the {what} to another file")
    refuse_existing(output, force)
    if not output.parent.is_dir():
        raise PruneError(f"output folder {output.parent} does not exist; create it first")


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


def json_stage(path: str | Path, compute: Callable[[], object], force: bool = False,
               figures: dict | None = None) -> tuple[object, bool]:
    """``(result, fresh)``: the JSON at ``path`` if it exists (and not ``force``), else ``compute()``
    written there atomically; ``figures`` (path -> ``draw(result, path)``) are drawn when the result is
    new or they are missing. The result is read back from the file, so that a first run and a re-run
    see the same objects (lists, not tuples)."""
    path = Path(path)
    fresh = force or not path.exists()
    if fresh:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(compute(), indent=2) + "\n")
    result = json.loads(path.read_text())
    for figure, draw in (figures or {}).items():
        if fresh or not Path(figure).exists():
            draw(result, Path(figure))
    return result, fresh
