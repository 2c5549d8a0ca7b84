"""A compress working folder (both hosts): the block counts it tries and the settings it was made with."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from fairchem_prune.errors import PruneError


def block_counts(blocks: list[int] | None, b: int) -> list[int]:
    """The candidates' block counts, largest first: ``blocks`` (checked against the checkpoint's ``b``)
    or every count below ``b``."""
    counts = sorted(set(blocks), reverse=True) if blocks else list(range(b - 1, 0, -1))
    wrong = [k for k in counts if not 1 <= k < b]
    if wrong or not counts:
        raise PruneError(f"--blocks {wrong or blocks}: the checkpoint has {b} blocks; give counts from 1 to {b - 1}")
    return counts


def check_settings(out: Path, settings) -> Callable[[], None]:
    """``out/settings.json`` records what the candidates were made with (``settings``, a dataclass); other
    settings need another --out. Returns what takes back this call's start of a new folder (removes what
    is in it, and the folder if this call made it); a no-op for a folder that held the run already."""
    path = out / "settings.json"
    mine = json.loads(json.dumps(asdict(settings)))
    if path.exists():
        before = json.loads(path.read_text())
        changed = [k for k in mine if before.get(k) != mine[k]]
        if changed:
            raise PruneError(f"{out} holds a compress run with other settings "
                             f"({', '.join(f'{k}: {before.get(k)!r}' for k in changed)}); choose another --out")
        return lambda: None
    existed = out.exists()
    if existed and any(out.iterdir()):
        raise PruneError(f"--out {out} exists and is not a compress folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mine, indent=2) + "\n")

    def take_back() -> None:
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        if not existed:
            out.rmdir()

    return take_back
