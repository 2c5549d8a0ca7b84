"""The demo's data: the pre-training mix of ``make_demo_data`` (generated once into a cache folder, or
a folder given with ``--data``) and the downstream ethanol task converted from its rMD17-format file."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from fairchem_prune.demo.generation import DemoSize, SourceWriter, demo_manifest, make_demo_data, write_lmdb_source
from fairchem_prune.errors import PruneError

SOURCES = ("xtb_molecules", "emt_slabs")
ETHANOL_RAW = Path("raw") / "rmd17_ethanol.npz"


def cache_root() -> Path:
    """``$FAIRCHEM_PRUNE_CACHE``, else ``~/.cache/fairchem-prune`` (shared with ``setup.sh``)."""
    return Path(os.environ.get("FAIRCHEM_PRUNE_CACHE") or Path.home() / ".cache" / "fairchem-prune")


@dataclass(frozen=True)
class DemoData:
    """A ``make_demo_data`` folder: ``pretrain/{train,val}/<source>.lmdb`` and ``raw/``."""

    root: Path
    manifest: dict

    @property
    def train(self) -> Path:
        return self.root / "pretrain" / "train"

    @property
    def val(self) -> Path:
        return self.root / "pretrain" / "val"

    def val_sources(self) -> dict[str, Path]:
        """Validation LMDB of each pre-training source."""
        return {source: self.val / f"{source}.lmdb" for source in SOURCES}


def demo_folder(data: str | Path | None, size: str, size_spec: DemoSize, seed: int, say,
                writer: SourceWriter = write_lmdb_source, suffix: str = "") -> Path:
    """The folder ``data`` (checked to exist), or the cached ``size``/``seed`` demo data
    (``<cache>/demo_data/<size>-seed<seed><suffix>``, written by ``writer``), generated on first use
    (into a temporary folder renamed when complete, so an interrupted run leaves no half cache)."""
    if data is not None:
        root = Path(data)
        if not root.is_dir():
            raise PruneError(f"--data {root}: no such folder; write one with make-demo-data --out {root}, or leave "
                             "--data out (the demo generates its data)")
        return root
    root = cache_root() / "demo_data" / f"{size}-seed{seed}{suffix}"
    if not (root / "manifest.json").exists():
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        say(f"data: generating the {size} demo data (xTB molecules, EMT slabs, ethanol MD) into {root}")
        make_demo_data(partial, size_spec, seed=seed, force=True, writer=writer)
        partial.rename(root)
    return root


def demo_data(data: str | Path | None, size: str, size_spec: DemoSize, seed: int, say) -> DemoData:
    """:func:`demo_folder` of fairchem 1.x LMDBs, checked to be complete."""
    root = demo_folder(data, size, size_spec, seed, say)
    found = DemoData(root, demo_manifest(root))
    missing = [str(p) for p in (*found.val_sources().values(), found.root / ETHANOL_RAW) if not p.exists()]
    missing += [str(found.train / f"{s}.lmdb") for s in SOURCES if not (found.train / f"{s}.lmdb").exists()]
    if missing:
        raise PruneError(f"demo data {root} is incomplete (missing {missing[0]}); regenerate it with tools/make_demo_data.py")
    say(f"data: {root} ({', '.join(f'{k} {v}' for k, v in found.manifest['counts'].items() if k.startswith('pretrain'))})")
    return found


def downstream_data(data: DemoData, out: Path, sizes: tuple[int, int, int], force: bool, say) -> Path:
    """``out/{train,val,test}/data.lmdb`` of the ethanol task, ``sizes`` = (train, val, test) frames."""
    from fairchem_prune.datasets import prepare_dataset

    if all((out / split / "data.lmdb").exists() for split in ("train", "val", "test")) and not force:
        return out
    train, val, test = sizes
    counts = prepare_dataset("rmd17", data.root / ETHANOL_RAW, out, train_size=train, val_size=val, test_size=test,
                             force=True)
    say(f"data: downstream ethanol task -> {out} ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return out
