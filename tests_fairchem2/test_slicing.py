"""Slicing a fairchem 2 inference checkpoint equals the fixture's hand surgery: the same checkpoint
entries, and the same FAIRChemCalculator outputs (energies, forces, stress) for every system and task,
with unmerged and merged experts; fairchem's own fine-tuning entry point takes it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import REDUCED, UMA_TINY, cli, system_atoms, systems

from fairchem_prune.fairchem2.slicing import slice_inference_checkpoint

RTOL = 1e-5


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    """name in reference.npz -> the checkpoint this package wrote for the same blocks."""
    folder = tmp_path_factory.mktemp("sliced")
    out = {}
    for name, (_, kept) in REDUCED.items():
        out[name] = folder / f"{name}.pt"
        slice_inference_checkpoint(UMA_TINY, out[name], kept_blocks=kept)
    return out


@pytest.mark.parametrize("name", sorted(REDUCED))
def test_checkpoint_entries_equal_the_hand_surgery(sliced, name):
    ours, theirs = load(sliced[name]), load(REDUCED[name][0])
    assert type(ours) is type(theirs)
    assert ours.model_config == theirs.model_config and ours.tasks_config == theirs.tasks_config
    for field in ("model_state_dict", "ema_state_dict"):
        a, b = getattr(ours, field), getattr(theirs, field)
        assert list(a) == list(b), field  # same keys, same order
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), (field, key)
    assert ours.fairchem_prune["source_blocks"] == REDUCED[name][1]


def predictions(path, reference, settings):
    from fairchem.core import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit

    unit = load_predict_unit(str(path), inference_settings=settings, device="cpu")
    out = {}
    for system in systems(reference):
        atoms, task = system_atoms(reference, system)
        atoms.calc = FAIRChemCalculator(unit, task_name=task)
        out[system] = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.all():
            out[system]["stress"] = atoms.get_stress()
    return out


def assert_close(ours: dict, reference, prefix: str) -> None:
    for system, values in ours.items():
        for key, value in values.items():
            expected = reference[f"{prefix}__{system}__{key}"]
            # relative to the largest value, but not below float32's rounding of the summed terms where
            # they nearly cancel (forces of a few meV/Å: 3e-7 off on another CPU than the fixture's)
            scale = max(np.abs(expected).max(), 0.05)
            error = np.abs(value - expected).max()
            assert error <= RTOL * scale, (prefix, system, key, error)


@pytest.mark.parametrize("name", sorted(REDUCED))
def test_outputs_equal_the_hand_surgery_for_every_task(sliced, reference, name):
    ours = predictions(sliced[name], reference, "batch")
    assert {reference[f"{s}__task"].item() for s in ours} == {"omol", "oc20", "omat", "odac", "omc"}
    assert_close(ours, reference, name)
    full = predictions(UMA_TINY, reference, "batch")  # and the reduction changes them: the test can fail
    assert abs(full["ethanol"]["energy"] - ours["ethanol"]["energy"]) > 1e-2


def test_merged_experts_equal_the_hand_surgery(sliced, reference):
    from fairchem.core.units.mlip_unit.api.inference import InferenceSettings

    settings = InferenceSettings(merge_mole=True, compile=False, activation_checkpointing=False)
    for system in ("ethanol", "cu111_oh", "si_bulk"):  # a merged unit is tied to one system: one unit each
        one = {k: reference[k] for k in reference if not k.startswith(tuple(f"{s}__" for s in systems(reference)))
               or k.startswith(f"{system}__")}
        one["systems"] = np.array([system])
        assert_close(predictions(sliced["blocks0135"], one, settings), reference, "merged__blocks0135")


def test_fairchem_finetuning_starts_from_the_sliced_raw_weights(sliced):
    from fairchem.core.units.mlip_unit.mlip_unit import initialize_finetuning_model

    model = initialize_finetuning_model(str(sliced["first4"]))
    assert len(model.backbone.blocks) == 4 and model.backbone.num_layers == 4
    raw = load(REDUCED["first4"][0]).model_state_dict
    for key, value in model.state_dict().items():
        assert torch.equal(value, raw[key]), key


def test_a_slice_of_a_slice_names_the_original_blocks(sliced, tmp_path):
    out = tmp_path / "again.pt"
    report = slice_inference_checkpoint(sliced["blocks0135"], out, kept_blocks=[1, 3])
    assert report.source_blocks == [1, 5] and load(out).fairchem_prune["source_blocks"] == [1, 5]
    assert load(out).model_config["backbone"]["num_layers"] == 2


def test_listed_moe_layers_follow_the_kept_blocks(tmp_path):
    """A config listing ``layers_moe`` (blocks with MoLE layers) keeps it consistent: the kept MoLE
    blocks, renumbered; fairchem builds the result and loads both weight sets strictly."""
    import hydra
    from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint

    source = load(UMA_TINY)
    config = copy.deepcopy(source.model_config)
    config["backbone"]["layers_moe"] = [0, 2, 4]
    torch.manual_seed(0)
    model = hydra.utils.instantiate(config)
    ema = torch.optim.swa_utils.AveragedModel(model)
    path = tmp_path / "moe024.pt"
    torch.save(MLIPInferenceCheckpoint(config, model.state_dict(), ema.state_dict(), source.tasks_config), path)
    slice_inference_checkpoint(path, tmp_path / "out.pt", kept_blocks=[0, 1, 3, 4])
    out = load(tmp_path / "out.pt")
    assert out.model_config["backbone"]["layers_moe"] == [0, 3]
    mole = [k for k in out.model_state_dict if k.endswith("so2_conv_1.fc_m0.weights")]
    assert sorted(int(k.split(".")[2]) for k in mole) == [0, 3]  # MoLE weights where the config says
    assert torch.equal(out.model_state_dict["backbone.blocks.3.edge_wise.so2_conv_1.fc_m0.weights"],
                       model.state_dict()["backbone.blocks.4.edge_wise.so2_conv_1.fc_m0.weights"])


def test_the_command_line(tmp_path):
    """The slice, and nothing of the dependencies' on the console (Warp's line on a machine without a CUDA
    driver: fairchem imports nvalchemiops, which starts Warp)."""
    result = cli("slice", "--checkpoint", UMA_TINY, "--num-blocks-kept", "4", "--output", "u4.pt", cwd=tmp_path)
    assert "Warp" not in result.stderr and "Warp" not in result.stdout, result.stderr
    assert "(6 eSCN-MD blocks, raw and EMA weights)" in result.stdout
    assert "482,325 -> 327,765  (-32.0%)" in result.stdout  # the fixture's parameter counts
    assert load(tmp_path / "u4.pt").model_config == load(REDUCED["first4"][0]).model_config


def one_line_error(args, capsys) -> str:
    """The command's stderr (in this process), asserting exit status 2 and one ``error:`` line."""
    from fairchem_prune.cli import main

    assert main([str(a) for a in args]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"config": {"model": {"name": "gemnet_oc"}}, "state_dict": {}}, tmp_path / "v1.pt")
    (tmp_path / "corrupt.pt").write_bytes(UMA_TINY.read_bytes()[:100_000])
    other = load(UMA_TINY)
    other.model_config["backbone"]["model"] = "fairchem.core.models.base.HydraModel"
    torch.save(other, tmp_path / "other.pt")
    (tmp_path / "kept.pt").write_text("keep me")
    cases = {
        ("--checkpoint", "missing.pt", "--num-blocks-kept", "2"): "no such file",
        ("--checkpoint", "v1.pt", "--num-blocks-kept", "2"): "is a fairchem 1.x checkpoint; it needs fairchem-core 1.x: run it with .venv/bin/fairchem-prune",
        ("--checkpoint", "corrupt.pt", "--num-blocks-kept", "2"): "cannot be read",
        ("--checkpoint", "other.pt", "--num-blocks-kept", "2"): "fairchem-prune reduces the eSCN-MD backbones",
        ("--checkpoint", UMA_TINY, "--num-blocks-kept", "7"): "cannot keep 7 blocks: the source model has 6 eSCN-MD blocks",
        ("--checkpoint", UMA_TINY, "--kept-blocks", "0,9"): "block(s) [9] do not exist",
    }
    for args, message in cases.items():
        assert message in one_line_error(("slice", *args, "--output", "out.pt"), capsys), args
        assert not (tmp_path / "out.pt").exists()
    line = one_line_error(("slice", "--checkpoint", UMA_TINY, "--num-blocks-kept", "2", "--output", "kept.pt"), capsys)
    assert "already exists" in line and (tmp_path / "kept.pt").read_text() == "keep me"


def test_a_model_name_reads_fairchem_s_cache(tmp_path, monkeypatch):
    """``--checkpoint uma-s-1p1`` takes the file fairchem downloaded into its Hugging Face cache (a
    cache laid out as huggingface_hub lays it, holding the fixture); a name not downloaded says so."""
    from fairchem.core.calculate import pretrained_mlip

    from fairchem_prune.fairchem2.checkpoints import resolve_path

    snapshot = tmp_path / "models--facebook--UMA" / "snapshots" / ("0" * 40) / "checkpoints"
    snapshot.mkdir(parents=True)
    (snapshot / "uma-s-1p1.pt").write_bytes(UMA_TINY.read_bytes())
    (tmp_path / "models--facebook--UMA" / "refs").mkdir()
    (tmp_path / "models--facebook--UMA" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(pretrained_mlip, "CACHE_DIR", str(tmp_path))
    assert resolve_path("uma-s-1p1") == snapshot / "uma-s-1p1.pt"
    report = slice_inference_checkpoint("uma-s-1p1", tmp_path / "u2.pt", num_blocks_kept=2)
    assert report.source == snapshot / "uma-s-1p1.pt" and report.kept_blocks == [0, 1]
    with pytest.raises(Exception, match="is not in fairchem's cache"):
        resolve_path("uma-m-1p1")
    with pytest.raises(Exception, match="nor a model name fairchem knows"):
        resolve_path("uma-x")


def test_the_tasks_without_references_agree_with_the_hand_surgery_too(sliced, reference):
    """The model's other tasks (oc22, oc25, omat_rattle: no stored references): our checkpoint and the
    hand-made one give the same outputs on the slab and the bulk systems."""
    from fairchem.core import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit

    units = {which: load_predict_unit(str(path), inference_settings="batch", device="cpu")
             for which, path in (("ours", sliced["blocks0135"]), ("hand", REDUCED["blocks0135"][0]))}
    for task in ("oc22", "oc25", "omat_rattle"):
        for system in ("cu111_oh", "si_bulk"):
            out = {}
            for which, unit in units.items():
                atoms, _ = system_atoms(reference, system)
                atoms.calc = FAIRChemCalculator(unit, task_name=task)
                out[which] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
            for ours, hand in zip(out["ours"], out["hand"]):
                # float32 sums in another order: 1e-5 relative, 1e-7 absolute for the near-zero untrained stress
                assert np.abs(np.asarray(ours) - hand).max() <= RTOL * max(np.abs(hand).max(), 1e-2), (task, system)
