"""md-check on fairchem 2: NVE runs of the UMA fixture and a 4-block reduction through fairchem's
FAIRChemCalculator, a molecule under omol and a slab under oc20; the JSON of the 1.x tool, energies
that are the calculator's, a quiet console, one-line errors."""

import json

import ase.io
import numpy as np
import pytest
from conftest import REDUCED, UMA_TINY, cli, system_atoms

MODEL_FIELDS = {"kind", "drift_mev_per_atom_ps", "stable", "unstable_at_fs", "reasons", "steps_per_second", "runs", "rdf_l1"}
RUN_FIELDS = {"time_fs", "total_energy", "potential_energy", "natoms", "stable", "unstable_at_fs", "reason",
              "steps_per_second", "histogram"}


def calculator_energy(path, atoms, task, settings="batch"):
    from fairchem.core import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit

    from fairchem_prune.fairchem2.calculators import inference_settings

    atoms = atoms.copy()
    atoms.calc = FAIRChemCalculator(load_predict_unit(str(path), inference_settings=inference_settings(settings),
                                                      device="cpu"), task_name=task)
    return atoms.get_potential_energy()


@pytest.mark.parametrize("system, settings", [("ethanol", "batch"), ("cu111_oh", "merged")])
def test_md_check_runs_the_full_and_reduced_models(reference, tmp_path, system, settings):
    atoms, task = system_atoms(reference, system)
    ase.io.write(tmp_path / "start.extxyz", atoms)
    reduced = REDUCED["blocks0135"][0]
    out = tmp_path / "md.json"
    result = cli("md-check", "--checkpoint", f"full={UMA_TINY}", "--checkpoint", f"b0135={reduced}", "--task", task,
                 "--structures", tmp_path / "start.extxyz", "--steps", "20", "--inference-settings", settings,
                 "--out", out, cwd=tmp_path)
    console = (result.stdout + result.stderr).splitlines()
    assert len(console) < 40, "\n".join(console)
    report = json.loads(out.read_text())
    assert {"settings", "reference", "models"} <= set(report) and report["reference"] == "full"
    assert report["task"] == task and report["settings"]["steps"] == 20
    models = report["models"]
    assert list(models) == ["full", "b0135"]
    for name, path in (("full", UMA_TINY), ("b0135", reduced)):
        m = models[name]
        assert set(m) == MODEL_FIELDS and m["kind"] == "gradient" and m["stable"]
        assert np.isfinite(m["drift_mev_per_atom_ps"]) and m["steps_per_second"] > 0
        run = m["runs"][0]
        assert set(run) == RUN_FIELDS and run["natoms"] == len(atoms) and run["time_fs"][:2] == [0.0, 2.5]
        assert run["potential_energy"][0] == pytest.approx(calculator_energy(path, atoms, task, settings), abs=1e-6)
    assert models["full"]["rdf_l1"] == 0.0 and models["b0135"]["rdf_l1"] > 0
    assert abs(models["full"]["runs"][0]["potential_energy"][0] - models["b0135"]["runs"][0]["potential_energy"][0]) > 1e-3
    assert (tmp_path / "md.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "md.log").exists()


def test_md_check_refuses_bad_input_with_one_line(reference, tmp_path):
    atoms, _ = system_atoms(reference, "ethanol")
    ase.io.write(tmp_path / "start.xyz", atoms)
    (tmp_path / "md.json").write_text("{}")
    base = ["md-check", "--structures", tmp_path / "start.xyz", "--steps", "2", "--out", tmp_path / "new.json"]
    for extra, message in (
        (["--checkpoint", f"a={UMA_TINY}", "--task", "nope"], "task 'nope' is not one of the tasks of a"),
        (["--checkpoint", "nonsense", "--task", "omol"], "give NAME=PATH"),
        (["--checkpoint", f"a={tmp_path / 'missing.pt'}", "--task", "omol"], "no such file"),
        (["--checkpoint", f"a={UMA_TINY}", "--task", "omol", "--out", tmp_path / "md.json"], "already exists"),
    ):
        result = cli(*base, *extra, cwd=tmp_path, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and message in lines[-1], result.stderr[-800:]
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "new.json").exists() and (tmp_path / "md.json").read_text() == "{}"
