"""fairchem 2 inference checkpoints: read with the checks a user needs, written atomically.

An inference checkpoint is a pickled ``MLIPInferenceCheckpoint`` (what fairchem 2's training writes as
``inference_ckpt.pt`` and what the released UMA files are): ``model_config`` (a hydra ``HydraModel``
config), ``model_state_dict`` (raw weights: what fine-tuning starts from), ``ema_state_dict`` (an
``AveragedModel``'s: ``n_averaged`` + ``module.<key>``, what ``load_predict_unit`` uses) and
``tasks_config`` (hydra ``Task`` configs: loss, normalizer, element references per dataset).

A checkpoint this package wrote carries ``fairchem_prune`` (an attribute fairchem ignores): the source
checkpoint and the kept blocks' indices in the original model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from fairchem_prune import hosts
from fairchem_prune.errors import PruneError
from fairchem_prune.files import atomic_path

FIELDS = ("model_config", "model_state_dict", "ema_state_dict", "tasks_config")


def resolve_path(name_or_path: str | Path) -> Path:
    """A checkpoint file: ``name_or_path`` itself, or for a name fairchem registers (``uma-s-1p1``,
    ``uma-m-1p1``, ``esen-sm-conserving-all-omol``, ...) the file fairchem already downloaded into its
    Hugging Face cache (``$FAIRCHEM_CACHE_DIR``, default ``~/.cache/fairchem``); nothing is downloaded."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    from fairchem.core.calculate import pretrained_mlip

    known = pretrained_mlip._MODEL_CKPTS.checkpoints.get(str(name_or_path))
    if known is None:
        raise PruneError(f"checkpoint {path}: no such file (nor a model name fairchem knows: "
                         f"{', '.join(pretrained_mlip.available_models)})")
    from huggingface_hub import try_to_load_from_cache

    name = f"{known.subfolder}/{known.filename}" if known.subfolder else known.filename
    cached = try_to_load_from_cache(known.repo_id, name, cache_dir=pretrained_mlip.CACHE_DIR, revision=known.revision)
    if not isinstance(cached, str):
        raise PruneError(f"{name_or_path} is not in fairchem's cache ({pretrained_mlip.CACHE_DIR}); download it once "
                         f"where there is internet (load_predict_unit / pretrained_mlip.get_predict_unit(\"{name_or_path}\")) "
                         "or give the .pt file's path")
    return Path(cached)


def read_inference_checkpoint(path: str | Path, need_ema: bool = False):
    """The ``MLIPInferenceCheckpoint`` at ``path`` (a file, or a model name in fairchem's cache:
    :func:`resolve_path`) on the CPU, its configs as plain data, or PruneError naming the problem: no such file, a fairchem 1.x
    checkpoint, not a torch file, missing fields, no EMA weights when ``need_ema``."""
    from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint

    path = resolve_path(path)
    hosts.require_host(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for truncated / foreign files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PruneError(f"checkpoint {path} cannot be read ({reason}); is it a complete fairchem 2 inference "
                         "checkpoint (.pt)?") from None
    if not isinstance(checkpoint, MLIPInferenceCheckpoint):
        raise PruneError(f"checkpoint {path} is a {type(checkpoint).__name__}, not a fairchem 2 inference checkpoint "
                         "(MLIPInferenceCheckpoint); give an inference_ckpt.pt or a released UMA / eSEN file")
    missing = [f for f in FIELDS if not getattr(checkpoint, f, None) and f != "ema_state_dict"]
    if missing:
        raise PruneError(f"checkpoint {path} has no {', '.join(missing)}; it is not a complete inference checkpoint")
    if need_ema and not has_ema(checkpoint):
        raise PruneError(f"checkpoint {path} has no EMA weights (ema_state_dict is empty); use its raw weights "
                         "(leave --ema out)")
    for name in ("model_config", "tasks_config"):  # plain data: fairchem's training stores omegaconf configs
        setattr(checkpoint, name, _plain(getattr(checkpoint, name)))
    return checkpoint


def _plain(value):
    """``value`` with every omegaconf config in it (at any depth of dicts and lists) as plain dicts and lists."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, list) else value


def has_ema(checkpoint) -> bool:
    return bool(checkpoint.ema_state_dict) and any(k.startswith("module.") for k in checkpoint.ema_state_dict)


def save_inference_checkpoint(checkpoint, output: Path) -> None:
    """``torch.save`` next to ``output``, then moved into place: never a half-written file."""
    with atomic_path(output) as tmp:
        torch.save(checkpoint, tmp)


def source_blocks(checkpoint, num_blocks: int) -> list[int]:
    """The checkpoint's blocks' indices in the original model (recorded by slicing; else 0..b-1)."""
    return list((getattr(checkpoint, "fairchem_prune", None) or {}).get("source_blocks", range(num_blocks)))


def load_model(checkpoint, path: str | Path, use_ema: bool = True, strict: bool = True):
    """fairchem's own ``load_inference_model`` of (a copy of) ``checkpoint``: a ``HydraModel`` (inside an
    ``AveragedModel`` with ``use_ema``) with its weights, in eval mode, tasks not set up. A checkpoint
    whose weights do not fit its config is a PruneError."""
    from fairchem.core.units.mlip_unit.utils import load_inference_model

    try:
        model, _ = load_inference_model(str(path), use_ema=use_ema, strict=strict,
                                        preloaded_checkpoint=copy.deepcopy(checkpoint))
    except (RuntimeError, KeyError, ValueError) as err:
        reason = str(err).strip().splitlines()[0]
        raise PruneError(f"fairchem cannot build the model of {path} from its own config ({reason})") from None
    return model.eval()


def hydra_model(model):
    """The ``HydraModel`` inside an ``AveragedModel`` (or the model itself)."""
    return getattr(model, "module", model)
