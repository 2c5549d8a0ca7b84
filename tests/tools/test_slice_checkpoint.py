"""tools/slice_checkpoint.py: outputs, and one clear error line for each kind of bad input."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import to_batch, slab_atoms

from fairchem_prune.cli import tool_main

TOOL = Path(__file__).parents[2] / "tools" / "slice_checkpoint.py"


def test_script_slices_and_prints_parameter_counts(stock_checkpoint, tmp_path):
    path, _, _ = stock_checkpoint
    out = tmp_path / "k3.pt"
    result = subprocess.run(
        [sys.executable, str(TOOL), "--checkpoint", str(path), "--kept-blocks", "0,1,3", "--output", str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "parameters  86,827 -> " in result.stdout and "kept blocks [0, 1, 3]" in result.stdout
    checkpoint = torch.load(out, weights_only=False)
    model_config = checkpoint["config"]["model"]
    assert model_config["name"] == "gemnet_oc_reduced" and model_config["num_blocks"] == 3
    assert model_config["source_blocks"] == [0, 1, 3] and "pretrained_checkpoint" not in model_config
    assert "optimizer" not in checkpoint and "ema" not in checkpoint


def test_sliced_checkpoint_loads_with_ocp_calculator(stock_checkpoint, tmp_path):
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator
    from fairchem.core.common.registry import registry

    path, _, _ = stock_checkpoint
    assert tool_main("slice", ["--checkpoint", str(path), "--num-blocks-kept", "2", "--output", str(tmp_path / "k2.pt")]) == 0
    atoms = slab_atoms()
    atoms.calc = OCPCalculator(checkpoint_path=str(tmp_path / "k2.pt"), cpu=True)
    reduced = registry.get_model_class("gemnet_oc_reduced")(pretrained_checkpoint=str(path), num_blocks_kept=2).eval()
    expected = reduced(to_batch([slab_atoms()]))
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"].item(), rel=1e-5)
    assert atoms.get_forces() == pytest.approx(expected["forces"].detach().numpy(), rel=1e-4, abs=1e-5)


def write_other_model_checkpoint(path):
    torch.save({"config": {"model": {"name": "schnet", "hidden_channels": 8}}, "state_dict": {}}, path)


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("too many blocks", ["--num-blocks-kept", "6"], "cannot keep 6 blocks: the source model has 5 interaction blocks"),
        ("duplicate", ["--kept-blocks", "0,1,1"], "duplicate indices"),
        ("unsorted", ["--kept-blocks", "2,0"], "not in increasing order"),
        ("negative", ["--kept-blocks=-1,2"], "block(s) [-1] do not exist"),
        ("missing file", ["--num-blocks-kept", "2", "--checkpoint", "{tmp}/missing.pt"], "missing.pt: no such file"),
        ("corrupt file", ["--num-blocks-kept", "2", "--checkpoint", "{tmp}/corrupt.pt"], "cannot be read"),
        ("other model", ["--num-blocks-kept", "2", "--checkpoint", "{tmp}/schnet.pt"], "holds a 'schnet' model"),
        ("output exists", ["--num-blocks-kept", "2", "--output", "{tmp}/existing.pt"], "already exists; choose another path or pass --force"),
    ],
)
def test_bad_input_gives_one_clear_line_and_changes_nothing(stock_checkpoint, tmp_path, capsys, case, args, message):
    path, _, _ = stock_checkpoint
    (tmp_path / "corrupt.pt").write_bytes(path.read_bytes()[:2000])
    write_other_model_checkpoint(tmp_path / "schnet.pt")
    (tmp_path / "existing.pt").write_bytes(b"precious")
    args = [a.format(tmp=tmp_path) for a in args]
    argv = ([] if "--checkpoint" in args else ["--checkpoint", str(path)]) + args
    argv += [] if "--output" in args else ["--output", str(tmp_path / "out.pt")]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert tool_main("slice", argv) == 2, case
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # nothing written, nothing overwritten


def test_force_overwrites_an_existing_output(stock_checkpoint, tmp_path):
    path, _, _ = stock_checkpoint
    (tmp_path / "existing.pt").write_bytes(b"old")
    argv = ["--checkpoint", str(path), "--num-blocks-kept", "2", "--output", str(tmp_path / "existing.pt"), "--force"]
    assert tool_main("slice", argv) == 0
    assert torch.load(tmp_path / "existing.pt", weights_only=False)["config"]["model"]["num_blocks"] == 2


def _unfitted(model):
    """``model`` with every ScaleFactor unfitted (stored 0: skipped, the identity), as a model trained
    without a scale file has them; returns their count."""
    from fairchem.core.modules.scaling import ScaleFactor

    factors = [m for m in model.modules() if isinstance(m, ScaleFactor)]
    for factor in factors:
        factor.reset_()
    return len(factors)


@pytest.mark.parametrize("direct_forces", [True, False])
def test_unfitted_scale_factors_stored_as_one_give_bit_identical_outputs(direct_forces, one_thread):
    """Storing each unfitted scale factor as 1.0 marks it fitted and changes no output bit: energy,
    direct forces, and forces as energy gradients (autograd through x * 1.0; one thread, as the order of
    a multi-threaded scatter in the backward pass varies from call to call)."""
    from conftest import TINY_GEMNET, build_perturbed, energy_forces
    from fairchem.core.modules.scaling.util import ensure_fitted

    from fairchem_prune.checkpoints import fit_identity_scale_factors

    model = build_perturbed({**TINY_GEMNET, "name": "gemnet_oc", "direct_forces": direct_forces})
    count = _unfitted(model)
    batch = to_batch([slab_atoms()])
    before = energy_forces(model, batch)
    with pytest.raises(ValueError, match="is not fitted"):
        ensure_fitted(model)
    assert fit_identity_scale_factors(model) == count > 20
    ensure_fitted(model)  # no unfitted factor left
    after = energy_forces(model, batch)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert fit_identity_scale_factors(model) == 0


def test_a_slice_stores_unfitted_scale_factors_as_one(tmp_path):
    """The exported checkpoint (here every block kept, as the demo exports its teacher) has every
    factor fitted, the unfitted ones as exactly 1.0, and the others as they were."""
    from conftest import TINY_GEMNET, build_perturbed, write_checkpoint

    model_config = {**TINY_GEMNET, "name": "gemnet_oc"}
    model = build_perturbed(model_config)
    _unfitted(model.int_blocks[0])
    write_checkpoint(tmp_path / "source.pt", model, model_config)
    assert tool_main("slice", ["--checkpoint", str(tmp_path / "source.pt"), "--num-blocks-kept", "5",
                               "--output", str(tmp_path / "all.pt")]) == 0
    source, sliced = model.state_dict(), torch.load(tmp_path / "all.pt", weights_only=False)["state_dict"]
    factors = [k for k in source if k.endswith(".scale_factor")]
    unfitted = [k for k in factors if k.startswith("int_blocks.0.")]
    assert unfitted and all(sliced[k].item() == 1.0 for k in unfitted)
    assert all(torch.equal(sliced[k], source[k]) for k in factors if k not in unfitted)


def test_the_shipped_teacher_has_no_unfitted_scale_factor():
    from fairchem.core.modules.scaling.util import ensure_fitted

    from fairchem_prune.checkpoints import load_source
    from fairchem_prune.demo.teacher import SHIPPED

    ensure_fitted(load_source(SHIPPED).model)  # raises ValueError naming the first unfitted one
