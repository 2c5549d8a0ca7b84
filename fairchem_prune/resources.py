"""The experiment configs (``configs/``) that the package itself reads (the demo, the benchmark's
default), found by one lookup for both kinds of install: a wheel carries them inside the package
(``fairchem_prune/configs/``, hatchling's ``force-include``); a checkout (``pip install -e .``, what
``setup.sh`` does) reads them at the repository root, where ``fairchem --config-yml configs/...`` uses
the same files."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def configs_dir() -> Path:
    """The folder holding ``models/``, ``s2ef/`` and ``finetune/``."""
    packaged = _PACKAGE / "configs"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "configs"


def config_path(relative: str | Path) -> Path:
    """``configs_dir() / relative`` (e.g. ``"s2ef/distill_base.yml"``)."""
    return configs_dir() / relative


def resolve_config(path: str | Path) -> Path:
    """A config path as given (relative to the working directory), else, for ``configs/...``, the
    package's copy: ``configs/models/jmp_l.yml`` works from any folder."""
    path = Path(path)
    if not path.exists() and not path.is_absolute() and path.parts[:1] == ("configs",):
        return config_path(Path(*path.parts[1:]))
    return path
