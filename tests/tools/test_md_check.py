"""md-check on potentials with known behaviour (ASE's Lennard-Jones and EMT as the "models"): energy
conservation for a small time step, a large drift and a caught instability for time steps too large, the
distance histogram against the reference; and the tool on fairchem checkpoints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron
from conftest import TINY_GEMNET, build_perturbed, write_checkpoint

from fairchem_prune.md_check import MDSettings, check_models

REPO = Path(__file__).parents[2]


def argon_lj():
    return LennardJones(sigma=3.4, epsilon=0.0104, rc=10.0, smooth=True)


def test_a_smooth_potential_conserves_energy():
    result = check_models({"lj": argon_lj}, [Icosahedron("Ar", 2)], MDSettings(steps=300, timestep=2.0, temperature=60),
                          progress=False)
    model = result["models"]["lj"]
    assert model["stable"] and model["drift_mev_per_atom_ps"] < 0.01 and model["rdf_l1"] == 0.0


def test_drift_grows_with_the_time_step_and_a_blow_up_is_caught():
    """CH4 under EMT (C-H vibrations of ~11 fs): 0.1 fs conserves the energy, 2 fs drifts by ~50x more,
    5 fs stretches a bond past twice its length within a few vibrations."""
    runs = {dt: check_models({"emt": EMT}, [molecule("CH4")], MDSettings(steps=400, timestep=dt), progress=False)["models"]["emt"]
            for dt in (0.1, 2.0, 5.0)}
    assert runs[0.1]["stable"] and runs[0.1]["drift_mev_per_atom_ps"] < 0.2
    assert runs[2.0]["stable"] and runs[2.0]["drift_mev_per_atom_ps"] > 10 * runs[0.1]["drift_mev_per_atom_ps"]
    assert not runs[5.0]["stable"] and runs[5.0]["unstable_at_fs"] < 100
    assert runs[5.0]["reasons"] == ["a bond stretched past 2.0x its starting length"]


class _NaNAfter(Calculator):
    """EMT until ``after`` calls, then NaN forces."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, after: int):
        super().__init__()
        self.after, self.calls, self.emt = after, 0, EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        self.emt.calculate(atoms, properties, system_changes)
        self.results = dict(self.emt.results)
        if self.calls > self.after:
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)


def test_non_finite_forces_are_unstable_not_stable():
    result = check_models({"emt": EMT, "broken": lambda: _NaNAfter(20)}, [molecule("CH4")],
                          MDSettings(steps=100, timestep=0.5), progress=False)["models"]
    assert result["emt"]["stable"]
    assert not result["broken"]["stable"] and result["broken"]["reasons"] == ["an energy or force is not finite"]
    assert 5 <= result["broken"]["unstable_at_fs"] <= 15


def test_the_same_velocities_for_every_model_and_histogram_distances():
    """Two copies of one potential give identical trajectories (L1 0); a different one does not."""
    lj_other = lambda: LennardJones(sigma=3.0, epsilon=0.0104, rc=10.0, smooth=True)  # noqa: E731
    result = check_models({"a": argon_lj, "b": argon_lj, "c": lj_other}, [Icosahedron("Ar", 2)],
                          MDSettings(steps=200, timestep=5.0, temperature=60), progress=False)["models"]
    assert result["b"]["rdf_l1"] == 0.0 and result["b"]["runs"][0]["total_energy"] == result["a"]["runs"][0]["total_energy"]
    assert result["c"]["rdf_l1"] > 0.2


def test_the_tool_runs_checkpoints_quietly_and_refuses_bad_input(tmp_path, emt_lmdb):
    """A checkpoint with unfitted scale factors (trained without a scale file, as the demo's are): the
    console shows the progress, the table and where the files went, nothing of fairchem's (no warning per
    unfitted factor and step, no config dump: that is in the log, which has no carriage returns)."""
    from fairchem.core.modules.scaling import ScaleFactor

    import fairchem_prune.models.gemnet_oc_reduced  # noqa: F401  (registers gemnet_oc)

    model = {**TINY_GEMNET, "name": "gemnet_oc", "num_blocks": 3}
    weights = build_perturbed(model)
    for factor in (m for m in weights.modules() if isinstance(m, ScaleFactor)):
        factor.reset_()
    write_checkpoint(tmp_path / "t.pt", weights, model)
    tool = [sys.executable, str(REPO / "tools" / "md_check.py")]
    args = ["--checkpoint", f"teacher={tmp_path / 't.pt'}", "--checkpoint", f"again={tmp_path / 't.pt'}",
            "--structures", str(emt_lmdb["val"]), "--num-structures", "1", "--steps", "10", "--out", str(tmp_path / "md.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*tool, *args], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    console = (result.stdout + result.stderr).replace("\r", "\n").splitlines()
    assert "is not fitted" not in result.stderr and "weights_only" not in result.stderr
    assert len(console) <= 10, console  # 2 progress lines (one per 15 s at most), 4 of the table, "wrote ..."
    assert result.stdout.splitlines()[-1] == f"wrote {tmp_path / 'md.json'} and {tmp_path / 'md.png'} (fairchem's log: {tmp_path / 'md.log'})"
    log = (tmp_path / "md.log").read_text()
    assert "Loading model: gemnet_oc" in log and "\r" not in log and "is not fitted" not in log
    models = json.loads((tmp_path / "md.json").read_text())["models"]
    assert list(models) == ["teacher", "again"] and models["teacher"]["kind"] == "direct"
    assert models["again"]["rdf_l1"] == 0.0 and (tmp_path / "md.png").read_bytes()[:4] == b"\x89PNG"
    before = (tmp_path / "md.json").read_bytes()
    for bad, message in ((["--checkpoint", "nonsense", "--force"], "give NAME=PATH"),
                         (["--structures", str(tmp_path / "missing.xyz"), "--force"], "no such file or folder"),
                         ([], "already exists")):
        again = subprocess.run([*tool, *args, *bad], capture_output=True, text=True, cwd=tmp_path)
        assert again.returncode == 2 and message in again.stderr.strip().splitlines()[-1], again.stderr[-500:]
    assert (tmp_path / "md.json").read_bytes() == before  # nothing overwritten by a refused run
