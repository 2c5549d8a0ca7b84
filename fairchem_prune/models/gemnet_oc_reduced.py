"""``gemnet_oc_reduced``: fairchem's GemNet-OC keeping a subset of its interaction blocks.

The reduced model *is* a stock ``GemNetOC`` with b' = len(kept) interaction blocks (the forward
pass is fairchem's, unchanged, so it costs exactly what a b'-block GemNet-OC costs). What this
class adds is how it is built: from a source architecture with b blocks, optionally from a
pre-trained checkpoint whose kept blocks, output blocks and FinalMLP columns are copied over
(see :mod:`fairchem_prune.architectures.gemnet_oc`).

It also has the few behaviours in which JMP's GemNet-OC (facebookresearch/JMP) differs from
fairchem's, as options that default to fairchem's behaviour: a fixed radial-basis scale
(``absolute_rbf_cutoff``), JMP's cell-offset sign (``cell_offset_convention``), JMP's MLP output head
(``num_mlps``) and JMP's activation name (``scaled_silu``). With them, a JMP checkpoint converted by
:mod:`fairchem_prune.jmp` reproduces JMP's outputs.
"""

from __future__ import annotations

import copy
import inspect
import logging

import torch
from fairchem.core.common.registry import registry
from fairchem.core.models.gemnet_oc.gemnet_oc import GemNetOC, GemNetOCBackbone
from fairchem.core.models.gemnet_oc.layers.base_layers import ScaledSiLU
from torch import nn

from fairchem_prune.architectures.gemnet_oc import ADAPTER, is_first_mlp_weight
from fairchem_prune.blocks import kept_with_origin
from fairchem_prune.checkpoints import load_source, reject_contradictions
from fairchem_prune.errors import PruneError

#: JMP's names of fairchem's ``silu`` (both are SiLU(x) / 0.6)
ACTIVATION_ALIASES = {"scaled_silu": "silu", "scaled_swish": "silu", "swish": "silu"}
#: ``generate_graph_dict`` cell offsets: fairchem negates those of ``radius_graph_pbc``, JMP keeps them
CELL_OFFSET_CONVENTIONS = ("fairchem", "jmp")
HEAD_INIT_CHOICES = ("pretrained", "fresh")
#: the output layers that ``num_mlps`` shapes and ``head_init: fresh`` leaves freshly initialised
OUTPUT_LAYERS = ("out_energy", "out_forces")


def mlp_head(width: int, num_mlps: int) -> nn.Sequential:
    """JMP's output head: ``num_mlps`` linear layers, widths width -> ... -> width -> 1, ScaledSiLU
    between them, the last without bias (PyTorch's default initialisation, as JMP's). Module indices
    0, 2, ..., 2 (num_mlps - 1) are the linear layers, as in JMP's state dicts. Input (rows, width),
    output (rows, 1)."""
    layers: list[nn.Module] = []
    for _ in range(num_mlps - 1):
        layers += [nn.Linear(width, width), ScaledSiLU()]
    layers.append(nn.Linear(width, 1, bias=False))
    return nn.Sequential(*layers)


#: the JMP options (see :class:`GemNetOCReduced`) and their defaults, fairchem's behaviour
JMP_OPTION_DEFAULTS = {"absolute_rbf_cutoff": None, "cell_offset_convention": "fairchem", "num_mlps": 1,
                       "untagged_tag": None}


def _jmp_options(kwargs: dict) -> dict:
    """Pop and check the JMP options of a model config ``kwargs`` (defaults filled in)."""
    options = {key: kwargs.pop(key, default) for key, default in JMP_OPTION_DEFAULTS.items()}
    cutoff, convention, num_mlps, untagged = options.values()
    if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or cutoff <= 0):
        raise PruneError(f"absolute_rbf_cutoff must be a positive distance in Å (or null), got {cutoff!r}")
    if convention not in CELL_OFFSET_CONVENTIONS:
        raise PruneError(f"cell_offset_convention must be one of {CELL_OFFSET_CONVENTIONS}, got {convention!r}")
    if isinstance(num_mlps, bool) or not isinstance(num_mlps, int) or num_mlps < 1:
        raise PruneError(f"num_mlps must be a positive number of output-head layers, got {num_mlps!r}")
    if untagged is not None and (isinstance(untagged, bool) or not isinstance(untagged, int) or untagged < 0):
        raise PruneError(f"untagged_tag must be an atom tag (JMP's: 2) or null, got {untagged!r}")
    return options


def check_graph_sizes(kwargs: dict) -> None:
    """PruneError instead of fairchem's bare ``AssertionError`` when a GemNet-OC config ``kwargs`` makes
    the atom-interaction graph smaller than another: fairchem selects the main, quadruplet and
    atom-edge graphs out of it, so with ``atom_interaction`` its ``cutoff_aint`` / ``max_neighbors_aint``
    must be at least theirs (fairchem's ``set_cutoffs`` / ``set_max_neighbors`` rules)."""
    if not kwargs.get("atom_interaction", False):
        return  # fairchem then takes the largest of the others
    defaults = inspect.signature(GemNetOC.__init__).parameters
    for kind in ("cutoff", "max_neighbors"):
        largest = kwargs.get(f"{kind}_aint")
        if largest is None:
            continue
        others = {kind: kwargs.get(kind, defaults[kind].default)}
        if kwargs.get("quad_interaction", False):
            others[f"{kind}_qint"] = kwargs.get(f"{kind}_qint")
        if kwargs.get("atom_edge_interaction", False) or kwargs.get("edge_atom_interaction", False):
            others[f"{kind}_aeaint"] = kwargs.get(f"{kind}_aeaint")
        above = {key: value for key, value in others.items() if value is not None and value > largest}
        if above:
            given = ", ".join(f"{key}={value}" for key, value in above.items())
            raise PruneError(
                f"model {given} > {kind}_aint={largest}: GemNet-OC takes its other graphs out of the atom-interaction "
                f"graph, which must be the largest; set {kind}_aint to at least {max(above.values())} or lower "
                f"{' and '.join(above)}")


def is_output_layer_key(key: str) -> bool:
    """Whether state-dict entry ``key`` (monolithic key space) belongs to ``out_energy`` / ``out_forces``."""
    return key.split(".", 1)[0] in OUTPUT_LAYERS


@registry.register_model("gemnet_oc_reduced")
class GemNetOCReduced(GemNetOC):
    """GemNet-OC keeping a chosen, ordered subset of the interaction blocks of a source model.

    Args:
        num_blocks: interaction blocks b of the source architecture. Read from
            ``pretrained_checkpoint`` when one is given (then it may be left out).
        num_blocks_kept: keep the first b' blocks (1 <= b' <= b). Default: all.
        kept_blocks: or keep this explicit strictly increasing list of 0-based source block indices
            (ablations), e.g. ``[0, 1, 2, 4]``. The embedding output f_1 is always kept.
        mlp_init: first FinalMLP layer g_1 (``out_mlp_E[0]``, ``out_mlp_F[0]``, input d x (b'+1)):
            ``"sliced"`` copies the pre-trained columns of the kept partitions, ``"random"`` keeps a
            fresh initialisation. Only used with ``pretrained_checkpoint``.
        pretrained_checkpoint: fairchem checkpoint (``gemnet_oc``, ``gemnet_oc_reduced`` or a hydra
            model with a GemNet-OC backbone) to take the architecture and weights from (EMA weights
            when it has them). Shape hyperparameters (the adapter's ``shape_keys``) come from it and may
            not be contradicted; the others (cutoffs, neighbours, ``regress_forces``,
            ``direct_forces``, ``extensive``, ``otf_graph``, ...) may be changed.
        source_blocks: provenance only: indices of the source blocks in the original unreduced
            model (written by the slicing tool; default ``range(b)``).
        absolute_rbf_cutoff (keyword): scale every radial basis (and its envelope) by d / absolute_rbf_cutoff
            (Å) whatever the graph cutoffs, as JMP does (12 Å); None: fairchem's d / cutoff of each
            graph.
        cell_offset_convention (keyword): ``"fairchem"`` (fairchem negates the periodic cell offsets of its
            radius graph) or ``"jmp"`` (JMP keeps them). The sign decides which edge of a periodic
            self-image pair ``symmetrize_edges`` keeps, so it matters on periodic systems whose
            max-neighbour cut splits such pairs.
        num_mlps (keyword): linear layers of the energy / force output heads (``out_energy``, ``out_forces``):
            1 is fairchem's single bias-free layer, more is JMP's MLP head (:func:`mlp_head`; the
            released JMP heads have 5).
        head_init: with ``pretrained_checkpoint``: ``"pretrained"`` copies the output heads,
            ``"fresh"`` keeps them freshly initialised (JMP fine-tunes with a fresh head); then
            ``num_mlps`` may differ from the checkpoint's.
        untagged_tag (keyword): a structure whose atoms all carry tag 0 (untagged: ASE's default, a
            molecule or a bulk crystal) is read as if every atom carried this tag when the quadruplets
            are chosen by ``qint_tags``; JMP tags such structures 2 (its non-catalysis convention), and
            a converted JMP checkpoint sets 2. None (default): the tags as given, fairchem's behaviour.
            Structures with any non-zero tag (OC20 slabs: 0 bulk, 1 surface, 2 adsorbate) keep theirs.
        activation (keyword): fairchem's ``silu`` or JMP's name for it, ``scaled_silu``.
            The four JMP options are read from ``pretrained_checkpoint`` unless given, and recorded
            in ``resolved_config`` where they differ from fairchem's behaviour.
        **kwargs: any other ``gemnet_oc`` argument.

    Attributes:
        kept_blocks: the kept source block indices. source_blocks: their indices in the original
            model. resolved_config: self-contained kwargs (no checkpoint path) that rebuild this
            architecture with ``num_blocks=b'``.
    """

    def __init__(
        self,
        num_blocks: int | None = None,
        num_blocks_kept: int | None = None,
        kept_blocks: list[int] | None = None,
        mlp_init: str = "sliced",
        pretrained_checkpoint: str | None = None,
        source_blocks: list[int] | None = None,
        head_init: str = "pretrained",
        **kwargs,
    ) -> None:
        ADAPTER.check_mlp_init(mlp_init)
        if head_init not in HEAD_INIT_CHOICES:
            raise PruneError(f"head_init must be one of {HEAD_INIT_CHOICES}, got {head_init!r}")
        if "activation" in kwargs:
            kwargs["activation"] = ACTIVATION_ALIASES.get(kwargs["activation"], kwargs["activation"])
        source = None
        if pretrained_checkpoint is not None:
            source = load_source(pretrained_checkpoint, architecture=ADAPTER)
            source_config = source.core_config()
            requested = dict(kwargs, **({"num_blocks": num_blocks} if num_blocks is not None else {}))
            if requested.get("num_blocks", source.num_blocks) != source.num_blocks:
                raise PruneError(
                    f"model config sets num_blocks={num_blocks} but pretrained_checkpoint "
                    f"{pretrained_checkpoint} has {source.num_blocks} interaction blocks; remove num_blocks "
                    "and choose the blocks with num_blocks_kept or kept_blocks"
                )
            shape_keys = ADAPTER.shape_keys + (("num_mlps",) if head_init == "pretrained" else ())
            reject_contradictions(shape_keys, ADAPTER.defaults(), source_config, kwargs, pretrained_checkpoint)
            source_blocks = source.source_blocks
            num_blocks = source.num_blocks
            source_config.pop("num_blocks", None)
            source_config.pop("source_blocks", None)
            kwargs = {**source_config, **kwargs}
            kwargs.pop("scale_file", None)
        elif num_blocks is None:
            raise PruneError("gemnet_oc_reduced needs num_blocks (source blocks) or a pretrained_checkpoint")

        kept, origin = kept_with_origin(num_blocks, num_blocks_kept, kept_blocks, source_blocks, ADAPTER.block_kind)
        options = _jmp_options(kwargs)
        check_graph_sizes(kwargs)
        # read by init_basis_functions, which GemNetOC.__init__ calls
        object.__setattr__(self, "absolute_rbf_cutoff", options["absolute_rbf_cutoff"])
        super().__init__(num_blocks=len(kept), **kwargs)
        self.kept_blocks, self.source_blocks = kept, origin
        self.cell_offset_convention, self.num_mlps = options["cell_offset_convention"], options["num_mlps"]
        self.untagged_tag = options["untagged_tag"]
        if self.num_mlps > 1:
            self._build_mlp_heads(kwargs)
        self.resolved_config = {
            **copy.deepcopy({k: v for k, v in kwargs.items() if k != "scale_file"}),
            # the JMP options only where they differ from fairchem's behaviour
            **{k: v for k, v in options.items() if v != JMP_OPTION_DEFAULTS[k]},
            "num_blocks": len(kept),
            "source_blocks": self.source_blocks,
        }
        if source is not None:
            self._load_pretrained(source, kept, mlp_init, head_init)

    def _build_mlp_heads(self, kwargs: dict) -> None:
        self.out_energy = mlp_head(kwargs["emb_size_atom"], self.num_mlps)
        if self.direct_forces:
            self.out_forces = mlp_head(kwargs["emb_size_edge"], self.num_mlps)

    def _load_pretrained(self, source, kept: list[int], mlp_init: str, head_init: str) -> None:
        weights = ADAPTER.slice_state_dict(source.monolithic_state_dict(), source.num_blocks, kept, mlp_init)
        own = self.state_dict()
        # drop what this configuration does not have (e.g. the force branch with direct_forces off)
        weights = {k: v for k, v in weights.items() if k in own and not (head_init == "fresh" and is_output_layer_key(k))}
        result = self.load_state_dict(weights, strict=False)
        fresh = [k for k in result.missing_keys if not (mlp_init == "random" and is_first_mlp_weight(k))
                 and not (head_init == "fresh" and is_output_layer_key(k))]
        if fresh:
            logging.info(f"gemnet_oc_reduced: not in {source.path}, freshly initialised: {fresh}")
        logging.info(
            f"gemnet_oc_reduced: kept blocks {kept} of {source.num_blocks} from {source.path} "
            f"({'EMA' if source.used_ema else 'raw'} weights, mlp_init={mlp_init}, head_init={head_init})"
        )

    def init_basis_functions(self, *args, **kwargs) -> None:
        """fairchem's bases, built with every graph cutoff set to ``absolute_rbf_cutoff`` when one is
        given (the radial bases then scale distances by it; the graphs keep their cutoffs)."""
        if self.absolute_rbf_cutoff is None:
            return super().init_basis_functions(*args, **kwargs)
        graph_cutoffs = (self.cutoff, self.cutoff_qint, self.cutoff_aeaint, self.cutoff_aint)
        self.cutoff = self.cutoff_qint = self.cutoff_aeaint = self.cutoff_aint = self.absolute_rbf_cutoff
        try:
            return super().init_basis_functions(*args, **kwargs)
        finally:
            self.cutoff, self.cutoff_qint, self.cutoff_aeaint, self.cutoff_aint = graph_cutoffs

    def generate_graph_dict(self, data, cutoff, max_neighbors) -> dict:
        """fairchem's graph, with JMP's cell-offset sign if ``cell_offset_convention`` is ``"jmp"``."""
        graph = super().generate_graph_dict(data, cutoff, max_neighbors)
        if self.cell_offset_convention == "jmp":
            graph["cell_offset"] = -graph["cell_offset"]
        return graph

    def check_input(self, data) -> None:
        """Raise PruneError if the model cannot run on ``data`` (a batch or one structure): with
        quadruplet interactions, some atom must carry one of ``qint_tags`` (fairchem fails with a
        reshape error otherwise), ``untagged_tag`` applied."""
        if not self.quad_interaction:
            return
        tags = self.quadruplet_tags(data)
        wanted = self.qint_tags.to(tags.device)
        if not torch.isin(tags, wanted).any():
            raise PruneError(
                f"the structures have atom tags {sorted(set(tags.tolist()))} but the model's quadruplet interactions "
                f"need atoms tagged qint_tags {wanted.tolist()}; tag molecules as JMP does, 2 on every atom (ASE: "
                "atoms.set_tags(2); tools/prepare_dataset.py writes it), or set model.untagged_tag: 2 (untagged "
                "structures read so) or model.qint_tags to include the data's tags"
            )

    def quadruplet_tags(self, data) -> torch.Tensor:
        """The atom tags (N,) that ``qint_tags`` selects the quadruplets by: ``data.tags`` (a batch or
        one structure), with every atom of an untagged structure (all tags 0) tagged ``untagged_tag``
        when that is set."""
        tags = data.tags.long()
        if self.untagged_tag is None or not tags.numel():
            return tags
        batch = data.batch if getattr(data, "batch", None) is not None else torch.zeros_like(tags)
        tagged = torch.zeros(int(batch.max()) + 1, dtype=torch.long, device=tags.device)
        tagged.index_add_(0, batch, (tags != 0).long())  # per structure: how many atoms carry a tag
        return torch.where(tagged[batch] > 0, tags, self.untagged_tag)

    def get_graphs_and_indices(self, data):
        if self.untagged_tag is not None:  # a shallow copy: the caller's batch keeps its tags
            data = copy.copy(data)
            data.tags = self.quadruplet_tags(data)
        self.check_input(data)
        return super().get_graphs_and_indices(data)


@registry.register_model("gemnet_oc_reduced_backbone")
class GemNetOCReducedBackbone(GemNetOCReduced, GemNetOCBackbone):
    """Hydra backbone variant of :class:`GemNetOCReduced` (same arguments).

    Pairs with fairchem's ``gemnet_oc_energy_and_grad_force_head`` / ``gemnet_oc_force_head``, whose
    first FinalMLP layer takes d x (b'+1) inputs. The backbone's ``pretrained_checkpoint`` loads the
    backbone weights; heads are built (fresh) by fairchem's ``hydra`` model. To start a hydra model
    with pre-trained, sliced heads, slice the checkpoint with ``tools/slice_checkpoint.py`` and use
    fairchem's ``finetune_config: {starting_checkpoint: SLICED}``.
    """

    def _build_mlp_heads(self, kwargs: dict) -> None:
        raise PruneError("num_mlps > 1 (JMP's MLP head) applies to the monolithic gemnet_oc_reduced; the hydra "
                         "heads of gemnet_oc_reduced_backbone are fairchem's, with their own output layers")
