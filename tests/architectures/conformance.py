"""The conformance suite every architecture adapter passes: ``class Test<Arch>(ConformanceTests)`` in
``tests/architectures/test_<arch>.py`` provides only the fixtures below; the tests are these.

A subclass provides:
    architecture: the adapter (``fairchem_prune.architectures.<arch>.ADAPTER``).
    stock_config(self) -> dict: a fresh tiny STOCK fairchem ``model:`` section with >= 4 blocks, monolithic
        (``{"name": "painn", ...}``) or hydra (``{"name": "hydra", "backbone": {"model": ...}, "heads": ...}``).
    hand_built(self, source, kept) -> nn.Module: a stock model of the same form with len(kept) blocks holding
        ``source``'s weights (kept blocks by index, the rest by name), in eval mode.
    properties: the predicted properties compared (``("energy", "forces")``, plus ``"stress"`` where predicted).
    contradiction: (shape key, value contradicting stock_config).
    equivariance_tolerance: max |F(R x) - R F(x)| / max |F| (and |dE| / max(1, |E|)) allowed.
    distill_overrides: fairchem command-line overrides keeping every block of the distill student.
Optional:
    distill_tolerance: a distillation term of a student keeping every block, relative to the size of
        what it compares (float32 round-off of the student's train-mode pass).
    batching_tolerance: relative difference allowed between relevance scores computed with batch size 1
        and 4 (default 1e-6; an architecture drawing random numbers per pass may need more).
The stock config has no dropout: the distill student runs in training mode and must compute what the
teacher (eval mode) computes. Each forward pass gets a batch of its own (eSEN's replaces the batch's
positions and cell).

Every forward pass is seeded (EquiformerV2 draws a random roll of each edge frame): equal seeds and equal
graphs give equal frames.
"""

from __future__ import annotations

import copy
import importlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import (
    build_perturbed, molecule_atoms, randomise_scale_factors, random_rotation, rel_err, slab_atoms, to_batch,
    write_checkpoint,
)
from fairchem.core.common.registry import registry

from fairchem_prune.architectures import core_of
from fairchem_prune.errors import PruneError

REPO = Path(__file__).parents[2]


def outputs(model: torch.nn.Module, batch, seed: int = 1) -> dict[str, torch.Tensor]:
    """The detached outputs of ``model`` by property, for monolithic models (``{property: tensor}``), hydra
    models (``{head: {property: tensor}}``) and hydra models with ``pass_through_head_outputs`` (flat);
    torch seeded with ``seed`` before the pass."""
    torch.manual_seed(seed)
    flat = {}
    for key, value in model(batch).items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return {key: value.detach() for key, value in flat.items()}


def is_hydra(config: dict) -> bool:
    return config.get("name") == "hydra"


def load(path) -> torch.nn.Module:
    """The model of a fairchem checkpoint, built from its own config, in eval mode."""
    from fairchem.core.common.utils import load_model_and_weights_from_checkpoint

    return load_model_and_weights_from_checkpoint(str(path)).eval()


def two_structures():
    """Ethanol in a box and a Cu(111) slab with O, one batch."""
    return to_batch([molecule_atoms(), slab_atoms()])


class ConformanceTests:
    """Base of the per-architecture conformance tests (not collected itself)."""

    architecture = None
    properties: tuple[str, ...] = ("energy", "forces")
    contradiction: tuple[str, object] = ()
    equivariance_tolerance: float = 1e-4
    distill_overrides: list[str] = []
    batching_tolerance: float = 1e-6
    distill_tolerance: float = 1e-6

    def stock_config(self) -> dict:
        raise NotImplementedError

    def hand_built(self, source: torch.nn.Module, kept: list[int]) -> torch.nn.Module:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def registered(self) -> None:
        """Register the stock names (and hydra) and this package's reduced models."""
        self.architecture.register_stock()
        importlib.import_module(self.architecture.model_module)

    def build_stock(self, seed: int = 0) -> tuple[torch.nn.Module, dict]:
        """(stock model with every parameter perturbed and random scale factors, its config)."""
        self.registered()
        config = self.stock_config()
        model = build_perturbed(config, seed)
        randomise_scale_factors(model, seed)  # GemNet-OC: a misplaced scale factor shows; else a no-op
        return model.eval(), config

    def num_blocks(self, model: torch.nn.Module) -> int:
        return self.architecture.num_blocks(core_of(model))

    def reduced(self, path, out_dir: Path, route: str = "model", **choice) -> torch.nn.Module:
        """The reduced model of checkpoint ``path`` keeping ``choice`` (num_blocks_kept / kept_blocks; none:
        all), built as the reduced monolithic model (``route="model"``, monolithic configs only) or by
        slicing the checkpoint and loading it with fairchem (``route="slice"``)."""
        if route == "model":
            cls = registry.get_model_class(self.architecture.reduced_model)
            return cls(pretrained_checkpoint=str(path), **choice).eval()
        from fairchem_prune.slicing import slice_checkpoint

        name = "_".join(f"{k}{v}" for k, v in choice.items()) or "all"
        out = Path(out_dir) / f"sliced_{re.sub(r'[^0-9a-z_]', '', name)}.pt"
        slice_checkpoint(path, out, **choice)
        return load(out)

    def routes(self, config: dict) -> list[str]:
        if is_hydra(config) or self.architecture.reduced_model is None:
            return ["slice"]
        return ["model", "slice"]

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture(autouse=True, scope="class")
    def _one_thread(self):
        """Tiny models: one intra-op thread (on a shared machine more cost ~20x what they save)."""
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(previous)

    @pytest.fixture(scope="class")
    def stock(self, tmp_path_factory, _one_thread):
        """(checkpoint path, stock model, its config) of a random stock checkpoint; shared: do not modify."""
        model, config = self.build_stock()
        assert self.num_blocks(model) >= 4, "stock_config must have at least 4 blocks"
        path = tmp_path_factory.mktemp(f"{type(self).__name__}_stock") / "stock.pt"
        write_checkpoint(path, model, config)
        return path, model, config

    @pytest.fixture(scope="class")
    def full_outputs(self, stock):
        """The stock model's outputs on :func:`two_structures`."""
        return outputs(stock[1], two_structures())

    # ------------------------------------------------------------------ 1. keeping every block
    @pytest.mark.parametrize("route", ["model", "slice"])
    def test_keeping_all_blocks_reproduces_the_stock_model(self, stock, full_outputs, tmp_path, route):
        path, model, config = stock
        if route not in self.routes(config):
            pytest.skip("a hydra checkpoint is reduced by slicing")
        reduced = self.reduced(path, tmp_path, route)
        assert self.num_blocks(reduced) == self.num_blocks(model)
        reduced_name = self.architecture.reduced_backbone if is_hydra(config) else self.architecture.reduced_model
        assert type(core_of(reduced)) is registry.get_model_class(reduced_name)
        got = outputs(reduced, two_structures())
        for prop in self.properties:
            ref = full_outputs[prop]
            assert ref.abs().max() > 1e-6, f"{prop}: a trivial reference"
            assert got[prop].shape == ref.shape, prop
            assert rel_err(got[prop], ref) <= 1e-5, (prop, rel_err(got[prop], ref))
        assert full_outputs["forces"].abs().max() > 1e-3

    # ------------------------------------------------------------------ 2. a subset of the blocks
    @pytest.mark.parametrize("route", ["model", "slice"])
    @pytest.mark.parametrize("choice", [{"num_blocks_kept": 3}, {"kept_blocks": [0, 2, 3]}, {"kept_blocks": [1, -1]}],
                             ids=["first3", "subset023", "second_and_last"])
    def test_reduced_equals_the_hand_built_stock_model(self, stock, full_outputs, tmp_path, route, choice):
        """-1: the last block."""
        path, model, config = stock
        if route not in self.routes(config):
            pytest.skip("a hydra checkpoint is reduced by slicing")
        if "kept_blocks" in choice:
            choice = {"kept_blocks": [k % self.num_blocks(model) for k in choice["kept_blocks"]]}
        kept = choice.get("kept_blocks") or list(range(choice["num_blocks_kept"]))
        reduced = self.reduced(path, tmp_path, route, **choice)
        assert self.num_blocks(reduced) == len(kept)
        assert list(core_of(reduced).source_blocks) == kept
        target = self.hand_built(model, kept).eval()
        assert self.num_blocks(target) == len(kept)
        got, ref = outputs(reduced, two_structures()), outputs(target, two_structures())
        for prop in self.properties:
            assert got[prop].dtype == torch.float32
            assert torch.equal(got[prop], ref[prop]), (prop, rel_err(got[prop], ref[prop]))
        # blocks really were removed: the outputs differ from the full model's
        assert rel_err(got["energy"], full_outputs["energy"]) > 1e-4
        assert rel_err(got["forces"], full_outputs["forces"]) > 1e-4

    # ------------------------------------------------------------------ 3. EMA
    def test_ema_weights_are_used_when_the_checkpoint_has_them(self, tmp_path):
        model, config = self.build_stock(seed=3)
        trainable = [p for p in model.parameters() if p.requires_grad]
        torch.manual_seed(7)
        ema = [p.detach() + 0.05 * torch.randn_like(p) for p in trainable]
        write_checkpoint(tmp_path / "ema.pt", model, config, ema_params=ema)
        raw = outputs(model, two_structures())
        carrying = copy.deepcopy(model)
        with torch.no_grad():
            for p, e in zip([p for p in carrying.parameters() if p.requires_grad], ema):
                p.copy_(e)
        ref = outputs(carrying, two_structures())
        assert rel_err(raw["energy"], ref["energy"]) > 1e-3  # the EMA weights make a difference
        for route in self.routes(config):
            got = outputs(self.reduced(tmp_path / "ema.pt", tmp_path, route), two_structures())
            for prop in self.properties:
                assert rel_err(got[prop], ref[prop]) <= 1e-5, (route, prop, rel_err(got[prop], ref[prop]))

    # ------------------------------------------------------------------ 4. contradictions
    def test_config_contradicting_the_checkpoint_is_an_error(self, stock):
        path, _, config = stock
        key, value = self.contradiction
        assert key in self.architecture.shape_keys
        core_config = config["backbone"] if is_hydra(config) else config
        name = self.architecture.reduced_backbone if is_hydra(config) else self.architecture.reduced_model
        cls = registry.get_model_class(name)
        assert core_config.get(key, self.architecture.defaults().get(key)) != value
        with pytest.raises(PruneError, match=rf"{re.escape(key)}=.* but pretrained_checkpoint"):
            cls(pretrained_checkpoint=str(path), **{key: value})
        # the checkpoint's own value is no contradiction
        if key in core_config:
            cls(pretrained_checkpoint=str(path), **{key: core_config[key]})

    # ------------------------------------------------------------------ 5. OCPCalculator
    def test_sliced_checkpoint_runs_in_fairchems_calculator(self, stock, tmp_path):
        from fairchem.core.common.relaxation.ase_utils import OCPCalculator
        from fairchem_prune.slicing import slice_checkpoint

        path, _, _ = stock
        sliced = tmp_path / "sliced.pt"
        slice_checkpoint(path, sliced, kept_blocks=[0, 2, 3])
        atoms = slab_atoms()
        atoms.calc = OCPCalculator(checkpoint_path=str(sliced), cpu=True, seed=0)
        torch.manual_seed(1)
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        ref = outputs(load(sliced), to_batch([atoms]))
        assert abs(energy - ref["energy"].item()) <= 1e-5 * max(1.0, abs(energy))
        assert rel_err(torch.tensor(forces, dtype=torch.float32), ref["forces"]) <= 1e-5
        assert np.abs(forces).max() > 1e-3

    # ------------------------------------------------------------------ 6. symmetry
    @pytest.mark.parametrize("make", [molecule_atoms, slab_atoms], ids=["molecule", "slab"])
    def test_energy_is_invariant_and_forces_equivariant(self, stock, tmp_path, make):
        path, _, config = stock
        model = self.reduced(path, tmp_path, self.routes(config)[0], kept_blocks=[0, 2, 3])
        atoms = make()
        rot = random_rotation(5)
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T + np.array([0.7, -1.3, 0.4])
        moved.cell = atoms.cell[:] @ rot.T
        before, after = outputs(model, to_batch([atoms])), outputs(model, to_batch([moved]))
        e0, e1, f0, f1 = before["energy"], after["energy"], before["forces"], after["forces"]
        scale = f0.abs().max().item()
        assert scale > 1e-3
        assert (e1 - e0).abs().max().item() <= self.equivariance_tolerance * max(1.0, e0.abs().max().item())
        rotated = f0 @ torch.tensor(rot.T, dtype=f0.dtype)
        assert (f1 - rotated).abs().max().item() <= self.equivariance_tolerance * scale
        assert (f1 - f0).abs().max().item() >= 0.1 * scale  # the check has teeth: the rotation matters

    # ------------------------------------------------------------------ 7. relevance
    def test_relevance_sums_to_one_and_does_not_depend_on_the_batch_size(self, stock, emt_lmdb):
        from fairchem_prune.relevance import block_relevance

        path, model, _ = stock
        results = [block_relevance(path, [emt_lmdb["val"]], num_samples=8, batch_size=size, device="cpu",
                                   progress=False) for size in (1, 4)]
        num_blocks = self.num_blocks(model)
        names = self.architecture.block_names(list(range(num_blocks)))
        scored = [r["datasets"]["val"] for r in results]
        for result, scores in zip(results, scored):
            assert result["blocks"] == names and scores["num_samples"] == 8
            assert len(scores["energy"]) == len(names)
            for branch in ("energy", "forces", "combined"):
                if scores[branch][0] is None:
                    continue
                assert min(scores[branch]) >= 0 and sum(scores[branch]) == pytest.approx(1.0, abs=1e-9), branch
        for branch in ("energy", "forces"):
            if scored[0][branch][0] is not None:
                one, four = np.array(scored[0][branch]), np.array(scored[1][branch])
                assert np.abs(one - four).max() <= self.batching_tolerance * np.abs(one).max(), (branch, one, four)
        assert max(scored[0]["energy"]) < 0.999  # not all on one feature: a sum over several

    # ------------------------------------------------------------------ 8. distillation
    def test_student_keeping_every_block_starts_with_every_term_at_zero(self, stock, emt_lmdb, tmp_path):
        from trainers.distill_helpers import build_trainer, distill_command

        from fairchem.core.common.utils import load_config

        path, _, config = stock
        distill = REPO / "configs" / self.architecture.distill_config
        assert distill.is_file(), distill
        merged, _, _ = load_config(str(distill))
        if is_hydra(config) and not is_hydra(merged["model"]):
            # a hydra teacher takes a hydra student: the monolithic model section as a reduced backbone
            student = {k: v for k, v in merged.pop("model").items() if k != "name"}
            merged["model"] = {"name": "hydra", "backbone": {"model": self.architecture.reduced_backbone, **student}}
            distill = tmp_path / "distill_hydra.yml"
            distill.write_text(yaml.safe_dump(merged))
        args = distill_command(str(distill), path, emt_lmdb, tmp_path, "x", *self.distill_overrides,
                               "--task.distill.energy_weight=1")
        trainer = build_trainer(args)
        assert self.num_blocks(trainer.model) == self.num_blocks(trainer.teacher)
        batch = next(iter(trainer.train_loader))
        trainer.model.train()
        trainer._compute_loss(trainer._forward(batch), batch)
        terms = trainer._step["logged"]
        expected = {"distill_forces", "distill_energy", "distill_n2n", "distill_loss"}
        if self.architecture.has_edge_features:
            expected.add("distill_e2e")
        assert expected <= set(terms), terms
        assert ("distill_e2e" in terms) == self.architecture.has_edge_features
        # each term relative to the size of what it compares (the random stock model's outputs are large:
        # float32 summation order alone gives absolute differences ~1e-5)
        teacher, (node, edge) = trainer._step["teacher_out"], trainer._step["teacher"]
        scales = {"distill_forces": teacher["forces"].abs().mean().item(),
                  "distill_energy": teacher["energy"].abs().mean().item(),
                  "distill_n2n": sum(h.abs().mean().item() for h in node),
                  "distill_e2e": sum(m.abs().mean().item() for m in edge)}
        print({k: (terms[k], scales[k]) for k in expected - {"distill_loss"}})
        for key in expected - {"distill_loss"}:
            assert scales[key] > 1e-3, (key, scales)  # the check has teeth: the compared outputs are not trivial
            assert terms[key] <= self.distill_tolerance * scales[key], (key, terms, scales)

    # ------------------------------------------------------------------ 9. layer-wise learning rates
    def test_every_parameter_gets_a_layerwise_learning_rate(self, stock, tmp_path):
        from fairchem_prune.trainers.finetune import layerwise_param_groups

        path, _, config = stock
        model = self.reduced(path, tmp_path, self.routes(config)[0], kept_blocks=[0, 2, 3])
        multipliers = [0.1, 0.2, 0.3]
        groups = layerwise_param_groups(model, 1.0, 0.0, {"embedding": 0.5, "blocks": multipliers})
        scale_of = {}
        for group in groups:
            assert group["lr"] == group["lr_scale"]
            for p in group["params"]:
                assert id(p) not in scale_of, "a parameter in two groups"
                scale_of[id(p)] = group["lr_scale"]
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert set(scale_of) == {id(p) for p in trainable} and len(scale_of) == len(trainable)
        blocks = self.architecture.blocks(core_of(model))
        assert len(blocks) == 3
        for i, modules in enumerate(blocks):
            params = [p for m in modules for p in m.parameters() if p.requires_grad]
            assert params and all(scale_of[id(p)] == multipliers[i] for p in params), i
        assert 0.5 in scale_of.values() and 1.0 in scale_of.values()  # an embedding and shared layers
        model.mystery = torch.nn.Linear(2, 2)
        with pytest.raises(PruneError, match=r"mystery\.weight"):
            layerwise_param_groups(model, 1.0, 0.0, {"embedding": 0.5, "blocks": multipliers})
