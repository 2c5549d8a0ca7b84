"""The seam between the two fairchem hosts of this package.

fairchem-prune runs beside fairchem-core 1.10 (the OCP trainer; GemNet-OC, EquiformerV2, eSEN, PaiNN:
the modules at the top of this package, ``architectures``, ``models``, ``trainers``, ...) or beside
fairchem-core 2.x (torchtnt units, hydra ``_target_`` configs, ``MLIPInferenceCheckpoint``; UMA and the
2.x eSEN models: :mod:`fairchem_prune.fairchem2`). The two never share a process: each lives in its own
environment (``.venv/``, ``.venv-fairchem2/``). Host-independent code (block selection, GradCAM
arithmetic, the budget rule, reports and plots, MD checks, timing, error handling) imports neither.

This module is the only place that asks which host is installed: it imports no fairchem and no torch,
and tells a checkpoint's host from its pickle without unpickling it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import pickletools
import zipfile
from pathlib import Path

from fairchem_prune.errors import PruneError

#: environment and set-up command of each host, for messages
ENVIRONMENTS = {1: (".venv", "./setup.sh"), 2: (".venv-fairchem2", "./setup.sh --fairchem 2")}

#: command name -> module, per host (1.x: fairchem_prune.commands, 2.x: fairchem_prune.fairchem2.commands)
COMMANDS = {
    1: {
        "convert-jmp": "convert_jmp", "slice": "slice", "demo": "demo", "prepare-dataset": "prepare_dataset",
        "make-demo-data": "make_demo_data", "relevance": "relevance", "ablate": "ablate", "benchmark": "benchmark",
        "distill-cost": "distill_cost", "md-check": "md_check", "compress": "compress", "evaluate": "evaluate",
    },
    2: {
        "slice": "slice", "relevance": "relevance", "ablate": "ablate", "finetune-config": "finetune_config",
        "distill-config": "distill_config", "demo": "demo",
        "benchmark": "benchmark", "md-check": "md_check", "compress": "compress",
    },
}
PACKAGES = {1: "fairchem_prune.commands", 2: "fairchem_prune.fairchem2.commands"}

#: the class a fairchem 2 inference checkpoint's pickle names
INFERENCE_CHECKPOINT = ("fairchem.core.units.mlip_unit.api.inference", "MLIPInferenceCheckpoint")


@functools.cache
def installed() -> int:
    """The major version of the installed fairchem-core (1 or 2); PruneError if there is none."""
    try:
        version = importlib.metadata.version("fairchem-core")
    except importlib.metadata.PackageNotFoundError:
        raise PruneError("fairchem-core is not installed in this environment; run ./setup.sh (fairchem-core 1.10) "
                         "or ./setup.sh --fairchem 2 (fairchem-core 2.x)") from None
    major = int(version.split(".")[0])
    if major not in ENVIRONMENTS:
        raise PruneError(f"fairchem-core {version} is installed; fairchem-prune runs beside 1.10 or 2.x")
    return major


def command_module(name: str, host: int | None = None) -> str:
    """The module of command ``name`` on ``host`` (default: the installed one)."""
    host = host or installed()
    return f"{PACKAGES[host]}.{COMMANDS[host][name]}"


def other_host_only(name: str, host: int | None = None) -> int | None:
    """The other host if only it has command ``name``, else None."""
    host = host or installed()
    other = 3 - host
    return other if name not in COMMANDS[host] and name in COMMANDS[other] else None


def run_elsewhere(what: str, host: int) -> str:
    """``"<what> needs fairchem-core 1.x: run it from .venv (./setup.sh)"``, for messages."""
    venv, setup = ENVIRONMENTS[host]
    return f"{what} needs fairchem-core {host}.x: run it with {venv}/bin/fairchem-prune (set up by {setup})"


def _pickle_globals(data: bytes) -> set[tuple[str, str]]:
    """(module, name) of every class a pickle refers to, read without unpickling it."""
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            module, name = arg.split(" ", 1)
            found.add((module, name))
        elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add((strings[-2], strings[-1]))
    return found


def checkpoint_host(path: str | Path) -> int | None:
    """2 for a fairchem 2 inference checkpoint (a pickled ``MLIPInferenceCheckpoint``), 1 for any other
    torch checkpoint (fairchem 1.x's ``{"config", "state_dict"}`` dict), None for a file that is not a
    readable torch zip archive (the loader then says why)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            data = archive.read(name)
        return 2 if INFERENCE_CHECKPOINT in _pickle_globals(data) else 1
    except (OSError, zipfile.BadZipFile, StopIteration, ValueError):
        return None


def require_host(path: str | Path, what: str = "checkpoint") -> None:
    """PruneError naming the environment to use when ``path`` is a checkpoint of the other host."""
    found = checkpoint_host(path)
    if found is not None and found != installed():
        kind = "fairchem 2 inference checkpoint (MLIPInferenceCheckpoint)" if found == 2 else "fairchem 1.x checkpoint"
        raise PruneError(f"{what} {path} is a {kind}; {run_elsewhere('it', found)}")
