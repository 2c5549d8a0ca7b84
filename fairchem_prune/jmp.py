"""Converting JMP checkpoints (facebookresearch/JMP, "From Molecules to Materials": ``jmp-s.pt``,
``jmp-l.pt``) into ordinary fairchem checkpoints of ``gemnet_oc_reduced``.

A JMP checkpoint is a PyTorch Lightning checkpoint of JMP's own GemNet-OC fork: ``state_dict`` with
``embedding.*`` (the atom embedding), ``backbone.*`` (bases, interaction and output blocks, FinalMLPs)
and ``output.out_{energy,forces}.{t}.*`` (one MLP head per pre-training task t), the EMA weights in
``optimizer_states[0]["ema"]`` (a tuple matched by position to the state-dict parameters), and the
architecture in ``hyper_parameters["backbone"]``. The converted model is fairchem's GemNet-OC with the
JMP options of :class:`~fairchem_prune.models.gemnet_oc_reduced.GemNetOCReduced` (fixed radial-basis
scale, JMP's cell-offset sign, JMP's MLP head), keeping every block; its weights are JMP's, renamed.

Weights (``weights``):

* ``"ema"``: what JMP's fine-tuning loader builds from the checkpoint: every parameter replaced by its
  EMA except ``out_blocks.N.seq_energy_pre.*``. That key is an alias of ``out_blocks.N.layers.*`` (one
  module under two names), the loader skips it when it swaps in the EMA values, and loading the state
  dict writes it after ``layers.*``: so the model JMP fine-tunes has the *raw* weights in the output
  blocks' ``layers`` and EMA weights everywhere else.
* ``"ema-all"``: the EMA weights everywhere, ``layers`` included: the model that JMP's EMA callback
  evaluated during pre-training.
* ``"raw"``: the stored state dict.

``task`` picks the pre-training head that becomes ``out_energy`` / ``out_forces``, and JMP's
normalisation of that task (energy and forces divided by a per-task std) becomes the checkpoint's
fairchem normalizers, so that predictions are in eV and eV/Å. ``"none"`` keeps the backbone only with a
fresh head and no normalizers (JMP fine-tunes with a fresh head).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fairchem_prune.datasets.raw import JMP_TAG
from fairchem_prune.errors import PruneError
from fairchem_prune.params import count_parameters

#: JMP's pre-training tasks, in the order of its heads
JMP_TASKS = ("oc20", "oc22", "ani1x", "transition1x")
TASK_CHOICES = (*JMP_TASKS, "none")
WEIGHTS_CHOICES = ("ema", "raw", "ema-all")

#: JMP's pre-training graph cutoff per task (its PretrainModel's data transforms), for all four graphs,
#: in Å; ``none`` takes the largest. The converted model is periodic (``use_pbc``) whatever the task,
#: with one radius graph per structure (``use_pbc_single``), as JMP builds them: fairchem then follows
#: each structure's own ``pbc`` flags, so molecules get JMP's molecular graphs even in a batch with slabs
TASK_CUTOFFS = {"oc20": 12.0, "oc22": 12.0, "ani1x": 8.0, "transition1x": 8.0, "none": 12.0}
#: JMP's MaxNeighbors.from_goc_base_proportions(30), every task
MAX_NEIGHBORS = {"max_neighbors": 30, "max_neighbors_aeaint": 20, "max_neighbors_qint": 8, "max_neighbors_aint": 1000}
#: JMP backbone hyperparameters that fairchem's GemNet-OC takes under the same name and meaning
SHARED_KEYS = (
    "num_spherical", "num_radial", "num_blocks", "emb_size_atom", "emb_size_edge", "emb_size_trip_in",
    "emb_size_trip_out", "emb_size_quad_in", "emb_size_quad_out", "emb_size_aint_in", "emb_size_aint_out",
    "emb_size_rbf", "emb_size_cbf", "emb_size_sbf", "num_before_skip", "num_after_skip", "num_concat", "num_atom",
    "num_output_afteratom", "num_atom_emb_layers", "num_global_out_layers", "regress_forces", "direct_forces",
    "scale_backprop_forces", "rbf", "rbf_spherical", "envelope", "cbf", "sbf", "extensive", "forces_coupled",
    "activation", "quad_interaction", "atom_edge_interaction", "edge_atom_interaction", "atom_interaction",
    "scale_basis", "qint_tags", "num_elements", "absolute_rbf_cutoff",
)
#: JMP backbone options that fairchem's GemNet-OC does not have: only these values convert
REQUIRED_VALUES = {
    "num_targets": 1, "regress_energy": True, "learnable_rbf": False, "learnable_rbf_stds": False,
    "unique_basis_per_layer": False, "ln": False, "replace_scale_factors_with_ln": False,
    "old_gaussian_implementation": False,
}
#: training-time regularisers of JMP's (not part of the model the checkpoint computes)
TRAINING_ONLY = ("dropout", "edge_dropout")
#: state-dict entries that are not parameters: JMP's EMA tuple skips them (``rbf.temps`` is fairchem's
#: constant ``coeff``; ``task_steps`` are step counters)
_NOT_EMA = re.compile(r"(rbf\.offset|rbf\.temps|scale_factor)$|\.seq_energy_pre\.|^task_steps\.")
_HEAD = re.compile(r"^output\.(out_energy|out_forces)\.(\d+)\.(.+)$")
_ALIAS, _LAYERS = ".seq_energy_pre.", ".layers."


@dataclass
class JMPCheckpoint:
    """A JMP Lightning checkpoint, read (:func:`read_jmp_checkpoint`)."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    hparams: dict
    ema: tuple | None
    lightning: str | None = None
    step: int | None = None

    @property
    def backbone(self) -> dict:
        return self.hparams["backbone"]

    @property
    def tasks(self) -> list[dict]:
        """The pre-training task configs, in the order of the heads (empty for other checkpoints)."""
        return list(self.hparams.get("tasks") or [])

    @property
    def task_names(self) -> list[str]:
        return [task["name"] for task in self.tasks]

    def parameter_keys(self) -> list[str]:
        """The state-dict keys of parameters, in order: what JMP's EMA tuple is matched to."""
        return [key for key in self.state_dict if not _NOT_EMA.search(key)]

    def num_parameters(self) -> int:
        return sum(self.state_dict[key].numel() for key in self.parameter_keys())

    def num_head_parameters(self) -> int:
        return sum(self.state_dict[key].numel() for key in self.parameter_keys() if _HEAD.match(key))


def read_jmp_checkpoint(path: str | Path) -> JMPCheckpoint:
    """Load a JMP checkpoint onto the CPU, or raise PruneError saying why it is not one."""
    from fairchem_prune.checkpoints import load_file

    path = Path(path)
    checkpoint = load_file(path, "JMP")
    if isinstance(checkpoint, dict) and "config" in checkpoint and "state_dict" in checkpoint \
            and "hyper_parameters" not in checkpoint:
        model = checkpoint["config"].get("model") if isinstance(checkpoint["config"], dict) else None
        name = model.get("name") if isinstance(model, dict) else model
        raise PruneError(f"checkpoint {path} is already a fairchem checkpoint (model {name!r}); it needs no conversion: "
                         "give it to the other tools as it is")
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    state_dict = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or not isinstance(hparams.get("backbone"), dict) or not isinstance(state_dict, dict) \
            or not any(key.startswith("backbone.int_blocks.") for key in state_dict):
        raise PruneError(f"checkpoint {path} is not a JMP checkpoint (no hyper_parameters['backbone'] and backbone.* "
                         "weights); give a JMP checkpoint such as jmp-s.pt or jmp-l.pt")
    ema = None
    states = checkpoint.get("optimizer_states") or []
    if states and isinstance(states[0], dict) and states[0].get("ema") is not None:
        ema = tuple(states[0]["ema"])
    return JMPCheckpoint(path=path, state_dict=dict(state_dict), hparams=hparams, ema=ema,
                         lightning=checkpoint.get("pytorch-lightning_version"), step=checkpoint.get("global_step"))


def model_config(jmp: JMPCheckpoint, task: str) -> dict:
    """The self-contained ``gemnet_oc_reduced`` config (no name) of the converted model: JMP's
    architecture, JMP's graph settings for ``task`` (one of :data:`TASK_CHOICES`) and JMP's output head."""
    backbone = jmp.backbone
    for key, wanted in REQUIRED_VALUES.items():
        if backbone.get(key, wanted) != wanted:
            raise PruneError(f"checkpoint {jmp.path}: backbone option {key}={backbone[key]!r} has no counterpart in "
                             f"fairchem's GemNet-OC (only {key}={wanted!r} converts)")
    missing = [key for key in SHARED_KEYS if key not in backbone and key != "absolute_rbf_cutoff"]
    if missing:
        raise PruneError(f"checkpoint {jmp.path}: hyper_parameters['backbone'] lacks {missing[:4]}; is it a JMP checkpoint?")
    embedding = jmp.hparams.get("embedding", {}).get("embedding_size", backbone["emb_size_atom"])
    if embedding != backbone["emb_size_atom"]:
        raise PruneError(f"checkpoint {jmp.path}: atom embedding width {embedding} differs from emb_size_atom "
                         f"{backbone['emb_size_atom']}; fairchem's GemNet-OC needs them equal")
    cutoff = TASK_CUTOFFS[task]
    config = {key: copy.deepcopy(backbone[key]) for key in SHARED_KEYS if backbone.get(key) is not None}
    config.update(
        cutoff=cutoff, cutoff_qint=cutoff, cutoff_aeaint=cutoff, cutoff_aint=cutoff, **MAX_NEIGHBORS,
        use_pbc=True, use_pbc_single=True, otf_graph=True, cell_offset_convention="jmp", untagged_tag=JMP_TAG,
        num_mlps=int(jmp.hparams.get("output", {}).get("num_mlps", 1)),
    )
    if task != "none":
        config["extensive"] = task_settings(jmp, task).get("node_energy_reduction", "sum") == "sum"
    return config


def task_settings(jmp: JMPCheckpoint, task: str) -> dict:
    """JMP's config of pre-training task ``task`` (its head's normalisation, loss scales, energy
    reduction); ``{}`` for ``"none"``. PruneError if the checkpoint has no such head."""
    if task == "none":
        return {}
    if task not in jmp.task_names:
        found = ", ".join(jmp.task_names) or "none"
        raise PruneError(f"checkpoint {jmp.path} has no {task} head (its pre-training heads: {found}); "
                         "choose one of those or --task none")
    return jmp.tasks[jmp.task_names.index(task)]


def _weights(jmp: JMPCheckpoint, weights: str) -> dict[str, torch.Tensor]:
    """The JMP state dict with ``weights`` (one of :data:`WEIGHTS_CHOICES`) applied (see the module
    docstring), in JMP's key space."""
    state = dict(jmp.state_dict)
    if weights == "raw":
        return state
    if jmp.ema is None:
        raise PruneError(f"checkpoint {jmp.path} has no EMA weights (optimizer_states[0]['ema'] is missing); "
                         "convert its stored weights with --weights raw")
    keys = jmp.parameter_keys()
    if len(keys) != len(jmp.ema):
        raise PruneError(f"checkpoint {jmp.path}: {len(jmp.ema)} EMA tensors for {len(keys)} parameters; "
                         "the checkpoint is inconsistent, convert with --weights raw")
    for key, value in zip(keys, jmp.ema):
        if value.shape != state[key].shape:
            raise PruneError(f"checkpoint {jmp.path}: EMA tensor for {key} has shape {tuple(value.shape)}, "
                             f"not {tuple(state[key].shape)}; convert with --weights raw")
        state[key] = value
    for alias in [key for key in state if _ALIAS in key]:
        layers = alias.replace(_ALIAS, _LAYERS)
        if weights == "ema":  # the alias (raw) is loaded last, as in JMP's fine-tuning model
            state[layers] = jmp.state_dict[alias]
        state[alias] = state[layers]
    return state


def fairchem_key(key: str, task_index: int | None) -> str | None:
    """The fairchem GemNet-OC name of JMP state-dict entry ``key``; None for entries with no
    counterpart (other tasks' heads, step counters, the Gaussian widths fairchem computes)."""
    if key.startswith("task_steps.") or key.endswith("rbf.temps"):
        return None
    head = _HEAD.match(key)
    if head:
        layer, index, rest = head.groups()
        return f"{layer}.{rest}" if task_index is not None and int(index) == task_index else None
    if key.startswith("embedding.atom_embedding."):
        return "atom_emb.embeddings." + key[len("embedding.atom_embedding."):]
    for prefix, new in (("backbone.bases.", ""), ("backbone.out_mlp_E.out_mlp.", "out_mlp_E."),
                        ("backbone.out_mlp_F.out_mlp.", "out_mlp_F."), ("backbone.", "")):
        if key.startswith(prefix):
            return new + key[len(prefix):]
    raise PruneError(f"JMP state-dict entry {key!r} is unknown to the converter; please report it with the checkpoint's origin")


def _check_gaussian_widths(jmp: JMPCheckpoint, model: torch.nn.Module) -> None:
    """JMP stores its Gaussian radial basis widths (``rbf.temps``); fairchem computes them (``coeff``).
    They must agree (they differ only for JMP's learnable widths, refused before)."""
    for key, temps in jmp.state_dict.items():
        if key.endswith("rbf.temps"):
            name = fairchem_key(key.removesuffix(".temps") + ".offset", None).removesuffix(".offset")
            try:
                coeff = getattr(model.get_submodule(name), "coeff", None)
            except AttributeError:
                coeff = None
            if coeff is None or not torch.allclose(temps.abs(), torch.full_like(temps, -coeff), rtol=1e-5):
                raise PruneError(f"checkpoint {jmp.path}: Gaussian widths {key} differ from fairchem's constant width; "
                                 "this checkpoint's radial basis cannot be converted")


@dataclass
class ConversionReport:
    """What :func:`convert_jmp` found and wrote."""

    source: Path
    output: Path
    task: str
    weights: str
    num_blocks: int
    config: dict
    jmp_parameters: int
    jmp_head_parameters: int
    jmp_tasks: list[str]
    converted_parameters: int
    normalization: dict = field(default_factory=dict)
    lightning: str | None = None
    step: int | None = None
    training_only: dict = field(default_factory=dict)

    def summary(self) -> str:
        c = self.config
        forces = "direct forces" if c.get("regress_forces") and c.get("direct_forces") else "no force branch"
        weights = {"ema": "EMA as JMP's fine-tuning loads them (raw out_blocks.N.layers, the seq_energy_pre alias)",
                   "ema-all": "EMA everywhere (the model JMP evaluated in pre-training)",
                   "raw": "raw (the stored state dict)"}[self.weights]
        heads = len(self.jmp_tasks)
        lines = [
            f"source        {self.source}  (JMP checkpoint, Lightning {self.lightning}, step {self.step})",
            f"architecture  GemNet-OC, {self.num_blocks} interaction blocks, atom {c['emb_size_atom']} / edge "
            f"{c['emb_size_edge']}, {forces}, qint_tags {c.get('qint_tags')}, radial bases scaled by "
            f"{c.get('absolute_rbf_cutoff') or 'each graph cutoff'} Å",
            f"parameters    JMP {self.jmp_parameters:,} = backbone {self.jmp_parameters - self.jmp_head_parameters:,} "
            f"+ {heads} head{'s' if heads != 1 else ''} ({', '.join(self.jmp_tasks) or 'none'}) of "
            f"{self.jmp_head_parameters // max(heads, 1):,}",
            f"weights       {weights}",
        ]
        if self.task == "none":
            lines.append(f"head          fresh {c['num_mlps']}-layer MLP (--task none), no normalizers")
        else:
            norm = self.normalization
            lines.append(f"head          {self.task}: {c['num_mlps']}-layer MLP; normalizers energy std {norm['energy']:.4g} eV"
                         + (f", forces std {norm['forces']:.4g} eV/Å" if "forces" in norm else ""))
        if self.training_only:
            settings = ", ".join(f"{key} {value}" for key, value in self.training_only.items())
            lines.append(f"not converted {settings} (JMP's training-time regularisation)")
        lines += [
            f"graph         cutoff {c['cutoff']:g} Å, max neighbours {c['max_neighbors']}/{c['max_neighbors_aeaint']}/"
            f"{c['max_neighbors_qint']}/{c['max_neighbors_aint']} (main/aeaint/qint/aint), use_pbc {c['use_pbc']}",
            f"written       {self.output}  (gemnet_oc_reduced, {self.converted_parameters:,} parameters)",
        ]
        return "\n".join(lines)


#: the non-model sections of the converted checkpoint's config (what OCPCalculator and the tools read)
def _fairchem_sections(jmp: JMPCheckpoint, settings: dict, regress_forces: bool) -> dict:
    optimizer = jmp.hparams.get("optimizer") or {}
    outputs = {"energy": {"shape": 1, "level": "system"}}
    losses = [{"energy": {"fn": "mae", "coefficient": settings.get("energy_loss_scale", 1.0)}}]
    metrics = {"energy": ["mae"]}
    if regress_forces:
        outputs["forces"] = {"irrep_dim": 1, "level": "atom", "train_on_free_atoms": True, "eval_on_free_atoms": True}
        losses.append({"forces": {"fn": "l2mae", "coefficient": settings.get("force_loss_scale", 1.0)}})
        metrics["forces"] = ["mae", "cosine_similarity"]
    return {
        "trainer": "ocp",
        "logger": "tensorboard",  # fairchem's default, wandb, needs an account
        "dataset": {"format": "lmdb", "src": "none (converted from a JMP checkpoint)"},
        "outputs": outputs,
        "loss_functions": losses,
        "evaluation_metrics": {"metrics": metrics, "primary_metric": "forces_mae" if regress_forces else "energy_mae"},
        # fairchem builds an optimizer even to predict: JMP's pre-training one (AdamW, its rate and decay)
        "optim": {"batch_size": 4, "eval_batch_size": 4, "num_workers": 0, "max_epochs": 1, "optimizer": "AdamW",
                  "scheduler": "Null",
                  "lr_initial": float(optimizer.get("lr", 3e-4)),
                  "optimizer_params": {"weight_decay": float(optimizer.get("weight_decay", 0.1))}},
        "task": {"prediction_dtype": "float32"},
    }


def _normalizers(settings: dict, regress_forces: bool) -> tuple[dict, dict]:
    """(fairchem normalizer state dicts, their stds) of a JMP task's normalisation (``settings``:
    :func:`task_settings`)."""
    from fairchem.core.modules.normalization.normalizer import Normalizer

    normalization = settings.get("normalization") or {}
    states, stds = {}, {}
    for jmp_name, target in (("y", "energy"), ("force", "forces")):
        if jmp_name in normalization and (target == "energy" or regress_forces):
            mean, std = float(normalization[jmp_name].get("mean", 0.0)), float(normalization[jmp_name]["std"])
            states[target] = Normalizer(mean=torch.tensor(mean), rmsd=torch.tensor(std)).state_dict()
            stds[target] = std
    return states, stds


def convert_jmp(checkpoint: str | Path, output: str | Path, task: str = "oc20", weights: str = "ema",
                force: bool = False, seed: int = 0) -> ConversionReport:
    """Write to ``output`` a self-contained fairchem checkpoint of the JMP checkpoint ``checkpoint``
    (see the module docstring). ``seed`` seeds the fresh head of ``task="none"``. Nothing is written
    when anything is wrong."""
    from fairchem.core.common.registry import registry

    from fairchem_prune.checkpoints import check_output, save_checkpoint
    from fairchem_prune.fast_init import fast_init
    from fairchem_prune.models.gemnet_oc_reduced import is_output_layer_key  # also registers gemnet_oc_reduced

    source, output = Path(checkpoint), Path(output)
    if task not in TASK_CHOICES:
        raise PruneError(f"--task {task!r} is not a JMP pre-training task; choose one of {', '.join(TASK_CHOICES)}")
    if weights not in WEIGHTS_CHOICES:
        raise PruneError(f"--weights must be one of {', '.join(WEIGHTS_CHOICES)}, got {weights!r}")
    check_output(source, output, force, "converted model")

    jmp = read_jmp_checkpoint(source)
    settings = task_settings(jmp, task)
    task_index = None if task == "none" else jmp.task_names.index(task)
    state = _weights(jmp, weights)
    config = model_config(jmp, task)

    torch.manual_seed(seed)
    with fast_init():  # every weight but a fresh head is overwritten below
        model = registry.get_model_class("gemnet_oc_reduced")(**copy.deepcopy(config))
    _check_gaussian_widths(jmp, model)
    converted = {}
    for key, value in state.items():
        name = fairchem_key(key, task_index)
        if name is not None:
            converted[name] = value
    own = model.state_dict()
    if task == "none":
        converted.update({k: v for k, v in own.items() if is_output_layer_key(k)})
    unexpected = sorted(set(converted) - set(own))
    missing = sorted(set(own) - set(converted))
    if unexpected or missing:
        raise PruneError(f"checkpoint {source}: its weights do not fit the architecture its hyper_parameters describe "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.load_state_dict(converted, strict=True)

    regress_forces = bool(config.get("regress_forces", True))
    normalizers, stds = _normalizers(settings, regress_forces)
    model_section = {"name": "gemnet_oc_reduced", **model.resolved_config}
    new = {
        "config": {"model": model_section, **_fairchem_sections(jmp, settings, regress_forces)},
        "state_dict": model.state_dict(),
        "normalizers": normalizers,
        "elementrefs": {},
        "amp": None,
        "ema": None,
        "fairchem_prune": {"converted_from": str(source), "jmp_task": task, "weights": weights,
                           "jmp_tasks": jmp.task_names},
    }
    save_checkpoint(new, output)
    return ConversionReport(
        source=source, output=output, task=task, weights=weights, num_blocks=int(config["num_blocks"]),
        config=model_section, jmp_parameters=jmp.num_parameters(), jmp_head_parameters=jmp.num_head_parameters(),
        jmp_tasks=jmp.task_names, converted_parameters=count_parameters(model), normalization=stds,
        lightning=jmp.lightning, step=jmp.step,
        training_only={key: jmp.backbone[key] for key in TRAINING_ONLY if jmp.backbone.get(key)},
    )


def pretraining_parameter_count(model_config: dict, num_tasks: int = len(JMP_TASKS)) -> int:
    """Trainable parameters of JMP's pre-training model whose architecture a converted model config
    describes (``{"name": "gemnet_oc_reduced", ...}`` with JMP's ``num_mlps`` and direct forces): the
    converted model, which has one task's energy and force heads, plus ``num_tasks - 1`` more of each.
    Trainable, as JMP counts them (its EMA covers them; GemNet-OC's scale factors are not)."""
    from fairchem_prune.models.gemnet_oc_reduced import mlp_head
    from fairchem_prune.params import count_config_parameters

    num_mlps = model_config.get("num_mlps", 1)
    heads = count_parameters(mlp_head(model_config["emb_size_atom"], num_mlps))
    if model_config.get("regress_forces", True) and model_config.get("direct_forces", False):
        heads += count_parameters(mlp_head(model_config["emb_size_edge"], num_mlps))
    return count_config_parameters(model_config, trainable_only=True) + (num_tasks - 1) * heads
