"""``fairchem --mode train ... --submit --cpu`` on CPU-only Slurm nodes, with the least intrusion into
fairchem 1.10, whose submit path assumes GPUs four times:

1. the submitting command asks sbatch for ``--gpus-per-node=<--num-gpus>``, which a node without a GPU
   gres rejects: with ``--submit --cpu`` the command line gets ``--slurm.gpus_per_node=0`` (submitit
   applies a config's ``slurm:`` section last), unless it sets that itself;
2-4. in the job, ``distutils.setup`` reads ``CUDA_VISIBLE_DEVICES`` (unset without a GPU gres), calls
   ``torch.cuda.set_device`` and initialises the ``nccl`` backend: with ``cpu`` in the job's config,
   ``CUDA_VISIBLE_DEVICES`` defaults to empty, fairchem's own CPU branch assigns the device
   (``use_cuda_visibile_devices``, fairchem's spelling) and the process group uses ``gloo``, as
   fairchem's local ``--cpu`` path does.

Runs without ``--cpu`` (GPU nodes) are untouched. Installed by :mod:`fairchem_prune._autoregister`.
"""

from __future__ import annotations

import functools
import os


def submit_argv(argv: list[str]) -> list[str]:
    """The ``fairchem`` command line, with ``--slurm.gpus_per_node=0`` for ``--submit --cpu``."""
    if "--submit" in argv and "--cpu" in argv and not any(a.startswith("--slurm.gpus_per_node") for a in argv):
        return [*argv, "--slurm.gpus_per_node=0"]
    return argv


def cpu_setup(setup):
    """fairchem's ``distutils.setup``, made to work on a CPU Slurm node for a submitted ``--cpu`` job."""

    @functools.wraps(setup)
    def wrapped(config: dict) -> None:
        if not (config.get("submit") and config.get("cpu")):
            return setup(config)
        import torch.distributed as dist

        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
        config["use_cuda_visibile_devices"] = True
        original = dist.init_process_group
        dist.init_process_group = functools.partial(_with_gloo, original)
        try:
            return setup(config)
        finally:
            dist.init_process_group = original

    return wrapped


def _with_gloo(init_process_group, *args, **kwargs):
    kwargs["backend"] = "gloo"
    return init_process_group(*args, **kwargs)
