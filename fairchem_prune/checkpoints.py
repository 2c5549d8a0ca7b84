"""Reading fairchem checkpoints as the source of a block reduction, and writing checkpoints.

A source is a fairchem 1.x checkpoint (``{"config": ..., "state_dict": ..., ["ema": ...]}``) of a
monolithic model or of a ``hydra`` model whose backbone is one of an architecture's (see
:mod:`fairchem_prune.architectures`). The model is rebuilt from the checkpoint's own config and
loaded with its EMA weights when the checkpoint has them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fairchem_prune import architectures, hosts
from fairchem_prune.architectures import Architecture
from fairchem_prune.errors import PruneError
from fairchem_prune.files import atomic_path, check_output  # noqa: F401  (check_output: re-exported)


def load_file(path: str | Path, kind: str) -> object:
    """``torch.load`` of a ``kind`` (e.g. "fairchem") checkpoint onto the CPU, or PruneError saying
    why it cannot be read. ``weights_only=False``: checkpoints hold configs (JMP's even PosixPaths)."""
    path = Path(path)
    if not path.is_file():
        raise PruneError(f"checkpoint {path}: no such file")
    hosts.require_host(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for truncated / foreign files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PruneError(f"checkpoint {path} cannot be read ({reason}); is it a complete {kind} .pt checkpoint?") from None


def save_checkpoint(checkpoint: dict, output: Path) -> None:
    """``torch.save`` next to ``output``, then moved into place: never a half-written file."""
    with atomic_path(output) as tmp:
        torch.save(checkpoint, tmp)


def fit_identity_scale_factors(model: nn.Module) -> int:
    """Store every unfitted fairchem ``ScaleFactor`` of ``model`` as exactly 1.0; returns how many.

    An unfitted factor (stored 0, ``fitted`` false) is skipped in the forward pass: the identity. A
    factor of 1.0 multiplies, and ``x * 1.0 == x`` bit for bit (gradients too), so outputs do not
    change; but it counts as fitted, and fairchem's predict path (``ensure_fitted(model, warn=True)``
    in ``OCPTrainer.predict``) stops logging one warning per unfitted factor on every call."""
    from fairchem.core.modules.scaling import ScaleFactor

    unfitted = [m for m in model.modules() if isinstance(m, ScaleFactor) and not m.fitted]
    for factor in unfitted:
        factor.set_(1.0)
    return len(unfitted)


def read_checkpoint(path: str | Path) -> dict:
    """Load a fairchem checkpoint onto the CPU, or raise PruneError saying why it cannot be used."""
    path = Path(path)
    checkpoint = load_file(path, "fairchem")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        raise PruneError(
            f"checkpoint {path} is not a fairchem checkpoint (it has no 'config' and 'state_dict'); "
            "give a checkpoint written by fairchem's trainer or by tools/slice_checkpoint.py"
        )
    return checkpoint


def checkpoint_model_config(checkpoint: dict, path: str | Path) -> dict:
    """The checkpoint's model config as ``{"name": ..., **kwargs}`` (old ``model_attributes`` too)."""
    config = checkpoint["config"]
    model = config.get("model") if isinstance(config, dict) else None
    if isinstance(model, str):
        model = {"name": model, **config.get("model_attributes", {})}
    if not isinstance(model, dict) or "name" not in model:
        raise PruneError(f"checkpoint {path} has no model config (config['model']['name'] is missing)")
    return copy.deepcopy(model)


@dataclass
class ModelSource:
    """A model rebuilt from a checkpoint, with its (EMA) weights loaded, and its architecture."""

    path: Path
    checkpoint: dict
    model_config: dict
    model: nn.Module
    used_ema: bool
    architecture: Architecture

    @property
    def is_hydra(self) -> bool:
        return self.model_config["name"] == "hydra"

    @property
    def core(self) -> nn.Module:
        """The module holding the blocks: the model itself, or the hydra backbone."""
        return self.model.backbone if self.is_hydra else self.model

    @property
    def num_blocks(self) -> int:
        return self.architecture.num_blocks(self.core)

    @property
    def source_blocks(self) -> list[int]:
        """Indices of these blocks in the original, unreduced model."""
        return self.architecture.source_blocks(self.core)

    def core_config(self) -> dict:
        """Self-contained kwargs of the core module (no name, no checkpoint references)."""
        resolved = getattr(self.core, "resolved_config", None)
        if resolved is not None:
            return copy.deepcopy(resolved)
        config = copy.deepcopy(self.model_config["backbone"] if self.is_hydra else self.model_config)
        for key in ("name", "model", "scale_file"):
            config.pop(key, None)
        return config

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Weights in the checkpoint's own key space (no DDP ``module.`` prefix)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def monolithic_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights in the key space of the monolithic model: a hydra backbone's keys without the
        ``backbone.`` prefix, and the layers of its heads (the adapter's ``head_layers``) under their
        own names."""
        if not self.is_hydra:
            return self.state_dict()
        weights = {k: v.detach().clone() for k, v in self.model.backbone.state_dict().items()}
        for head_name, head_config in self.model_config.get("heads", {}).items():
            for layer in self.architecture.head_layers.get(head_config.get("module"), ()):
                module = getattr(self.model.output_heads[head_name], layer, None)
                if module is not None:
                    weights.update({f"{layer}.{k}": v.detach().clone() for k, v in module.state_dict().items()})
        return weights


def reject_contradictions(keys, defaults: dict, source: dict, requested: dict, checkpoint: str) -> None:
    """Raise PruneError if ``requested`` (a model config) sets one of ``keys`` (shape hyperparameters)
    to another value than the checkpoint's ``source`` config (or the class ``defaults``)."""
    for key in keys:
        if key in requested:
            have = source.get(key)
            if have is None:
                have = defaults.get(key)
            if requested[key] != have:
                raise PruneError(
                    f"model config sets {key}={requested[key]!r} but pretrained_checkpoint {checkpoint} "
                    f"was trained with {key}={have!r}; remove {key} from the config (it is read from the checkpoint)"
                )


def _build(model_config: dict, path: Path, architecture: Architecture) -> nn.Module:
    """The model of a checkpoint's config, with the adapter's ``source_overrides`` (weights follow)."""
    from fairchem.core.common.registry import registry

    architecture.register_stock()
    config = copy.deepcopy(model_config)
    name = config.pop("name")
    if name == "hydra":
        if not config.get("heads"):
            raise PruneError(f"checkpoint {path} holds a hydra model without heads; give one with explicit heads")
        config["backbone"].update(architecture.source_overrides)
        config.pop("finetune_config", None)  # the weights come from this checkpoint
    else:
        config.update(architecture.source_overrides)
    return registry.get_model_class(name)(**config)


def _apply_ema(model: nn.Module, ema: dict, path: Path) -> None:
    trainable = [p for p in model.parameters() if p.requires_grad]
    shadow = ema["shadow_params"]
    if len(shadow) != len(trainable) or any(s.shape != p.shape for s, p in zip(shadow, trainable)):
        raise PruneError(
            f"checkpoint {path}: its EMA weights ({len(shadow)} tensors) do not match its model "
            f"({len(trainable)} trainable tensors); delete the 'ema' entry to use the raw weights"
        )
    with torch.no_grad():
        for param, value in zip(trainable, shadow):
            param.copy_(value)


def load_checkpoint_weights(model: nn.Module, checkpoint: dict, path: Path) -> bool:
    """Load the checkpoint's state dict (DDP prefixes matched), its ``scale_dict`` and its EMA
    weights into ``model``, built from the checkpoint's own config. Returns whether EMA was used."""
    from fairchem.core.common.utils import match_state_dict
    from fairchem.core.modules.scaling.compat import load_scales_compat

    weights = match_state_dict(model.state_dict(), checkpoint["state_dict"])
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise PruneError(
            f"checkpoint {path}: its weights do not fit the model its own config describes "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    if checkpoint.get("scale_dict"):
        load_scales_compat(model, checkpoint["scale_dict"])
    ema = checkpoint.get("ema")
    used_ema = bool(ema and ema.get("shadow_params"))
    if used_ema:
        _apply_ema(model, ema, path)
    return used_ema


def load_source(path: str | Path, checkpoint: dict | None = None, architecture: Architecture | None = None) -> ModelSource:
    """Rebuild the model of checkpoint ``path`` (already read: ``checkpoint``) and load its weights
    (EMA if present). With ``architecture``, a checkpoint of another one is an error."""
    path = Path(path)
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    model_config = checkpoint_model_config(checkpoint, path)
    if architecture is not None and not architecture.matches_config(model_config):
        raise PruneError(f"checkpoint {path} holds a {model_config['name']!r} model; expected an {architecture.label} "
                         f"checkpoint ({architecture.accepted()})")
    architecture = architecture or architectures.of_config(model_config, f"checkpoint {path}")
    model = _build(model_config, path, architecture)
    used_ema = load_checkpoint_weights(model, checkpoint, path)
    return ModelSource(path=path, checkpoint=checkpoint, model_config=model_config, model=model.eval(),
                       used_ema=used_ema, architecture=architecture)
