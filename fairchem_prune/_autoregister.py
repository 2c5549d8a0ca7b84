"""Make the stock fairchem registry resolve this package's short names, and the stock ``fairchem``
command report this package's errors in one line.

Imported at interpreter start-up by ``fairchem_prune_autoregister.pth`` (installed at the root of
site-packages), so it imports nothing heavy. It adds a meta-path finder that waits for two fairchem
modules to be imported:

* ``fairchem.core.common.registry``: its name mappings are wrapped so that a lookup of one of our
  names (a reduced model of one of :mod:`fairchem_prune.architectures`, a config's ``model: name:``
  or ``trainer:``) first imports the module that registers it. Nothing of ours is imported until such a
  name is actually asked for.
* ``fairchem.core._cli`` (the ``fairchem`` command): its ``main`` is wrapped so that a
  :class:`~fairchem_prune.errors.PruneError` raised by our models or trainers (bad data or config,
  before training starts) in the command's own process or in its local ranks (``--num-gpus N``) ends
  the command with one ``error: ...`` line on stderr and exit status 2, as this package's tools do,
  instead of a traceback; its ``Runner`` does the same in a Slurm job's log
  (:mod:`fairchem_prune.job_errors`). Every other exception passes unchanged. With ``--submit --cpu``
  the command line also asks Slurm for no GPU (:mod:`fairchem_prune.slurm_cpu`).
* ``fairchem.core.common.distutils``: its ``setup`` is wrapped so that a submitted ``--cpu`` job
  initialises on a CPU-only Slurm node (:mod:`fairchem_prune.slurm_cpu`); other runs are untouched.

Beside fairchem-core 2.x (:mod:`fairchem_prune.hosts`) none of this applies and the hook stays inert.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable

REGISTRY_MODULE = "fairchem.core.common.registry"
CLI_MODULE = "fairchem.core._cli"
DISTUTILS_MODULE = "fairchem.core.common.distutils"
WATCHED = (REGISTRY_MODULE, CLI_MODULE, DISTUTILS_MODULE)

def _reduced_models() -> dict[str, str]:
    """Our model names -> their modules, from the architecture adapters (imported on first need)."""
    from fairchem_prune.architectures import reduced_model_modules

    return reduced_model_modules()


#: mapping name in fairchem's registry -> {short name: module that registers it}, or a function
#: returning that mapping when a name is first missed
LAZY_NAMES: dict[str, dict[str, str] | Callable[[], dict[str, str]]] = {
    "model_name_mapping": _reduced_models,
    "trainer_name_mapping": {
        "finetune": "fairchem_prune.trainers.finetune",
        "distill": "fairchem_prune.trainers.distill",
    },
}


class _LazyMapping(dict):
    """A registry mapping that imports the registering module of a known name on first lookup."""

    def __init__(self, existing: dict, lazy: dict[str, str] | Callable[[], dict[str, str]]) -> None:
        super().__init__(existing)
        self._lazy = lazy

    def _load(self, key) -> None:
        if dict.__contains__(self, key):
            return
        if callable(self._lazy):
            self._lazy = self._lazy()
        if key in self._lazy:
            importlib.import_module(self._lazy[key])

    def get(self, key, default=None):
        self._load(key)
        return dict.get(self, key, default)

    def __getitem__(self, key):
        self._load(key)
        return dict.__getitem__(self, key)

    def __contains__(self, key) -> bool:
        self._load(key)
        return dict.__contains__(self, key)


def install(registry_class) -> None:
    """Wrap the name mappings of fairchem's ``Registry`` class (idempotent)."""
    for mapping_name, lazy in LAZY_NAMES.items():
        current = registry_class.mapping[mapping_name]
        if not isinstance(current, _LazyMapping):
            registry_class.mapping[mapping_name] = _LazyMapping(current, lazy)


def _one_line_errors(main):
    """``main`` of the ``fairchem`` command, printing our PruneError as ``error: ...`` (exit status 2)."""

    def wrapped(*args, **kwargs):
        from fairchem_prune.job_errors import quiet_rank_tracebacks, user_message
        from fairchem_prune.slurm_cpu import submit_argv

        if not args and kwargs.get("args") is None:  # the command parses sys.argv itself
            sys.argv[1:] = submit_argv(sys.argv[1:])
        try:
            with quiet_rank_tracebacks():
                return main(*args, **kwargs)
        except Exception as err:
            message = user_message(err)  # ours, raised here or by every failed rank
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(2) from None

    wrapped.__wrapped__ = main
    return wrapped


def _install_module(module) -> None:
    if module.__name__ == REGISTRY_MODULE:
        install(module.Registry)
    elif module.__name__ == DISTUTILS_MODULE:
        if not hasattr(module.setup, "__wrapped__"):
            from fairchem_prune.slurm_cpu import cpu_setup

            module.setup = cpu_setup(module.setup)
    elif not hasattr(module.main, "__wrapped__"):
        from fairchem_prune.job_errors import one_line_in_jobs

        module.main = _one_line_errors(module.main)
        module.Runner.__call__ = one_line_in_jobs(module.Runner.__call__)


class _Loader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader) -> None:
        self._wrapped = wrapped

    def create_module(self, spec):
        return self._wrapped.create_module(spec)

    def __getattr__(self, name):  # get_source, is_package, ... of the wrapped loader
        return getattr(self._wrapped, name)

    def exec_module(self, module) -> None:
        self._wrapped.exec_module(module)
        _install_module(module)


def _fairchem_1x() -> bool:
    """Whether the installed fairchem-core is 1.x: beside 2.x (whose registry and CLI share these
    module names) the hook does nothing."""
    from fairchem_prune import hosts

    try:
        return hosts.installed() == 1
    except Exception:
        return False


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in WATCHED or not _fairchem_1x():
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


for _name in WATCHED:
    if _name in sys.modules and _fairchem_1x():
        _install_module(sys.modules[_name])
if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
