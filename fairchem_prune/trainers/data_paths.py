"""The data files a training config names, checked before anything is built: fairchem finds a missing
split only when it opens it, after building the model, and then stops with an assertion traceback
(``No LMDBs found in 'data/rmd17_aspirin/test'``)."""

from __future__ import annotations

from pathlib import Path

from fairchem_prune.errors import PruneError

#: the trainer config's dataset sections (as fairchem's BaseTrainer names them) -> the split
SPLITS = {"dataset": "train", "val_dataset": "val", "test_dataset": "test"}


def check_data_paths(config: dict) -> None:
    """PruneError naming the first ``src`` of a train / val / test split of ``config`` (a trainer's
    config, relative paths from the working directory) that does not exist, and how to fix it."""
    for key, split in SPLITS.items():
        source = (config.get(key) or {}).get("src")
        for path in source if isinstance(source, list) else [source] if source else []:
            if not Path(path).exists():
                drop = "" if split == "train" else f", or leave the {split} split out (delete dataset.{split} from the config)"
                raise PruneError(f"dataset.{split}.src {path}: no such file or folder; give the data with "
                                 f"--dataset.{split}.src=PATH{drop}")


class ChecksDataPaths:
    """Mixin for fairchem trainers (before ``OCPTrainer`` in the bases): :func:`check_data_paths` before
    anything is built."""

    def load(self, inference_only: bool) -> None:
        if not inference_only:
            check_data_paths(self.config)
        super().load(inference_only)
