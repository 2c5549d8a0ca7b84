"""A normal install: the built wheel (not editable) in a fresh environment that has fairchem-core and the
PyG extensions (this environment's, reached by a path entry) but not this checkout. From an empty folder
the stock registry resolves the short names, and the demo, benchmark, slice and relevance commands run
with the configs the wheel carries."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def run(command, cwd, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, env=env, **kwargs)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory, demo_cache):
    """(the environment's bin folder, an empty working folder, the shared demo data cache)."""
    root = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", root / "dist", REPO], root)
    (wheel,) = (root / "dist").glob("fairchem_prune-*.whl")
    run([sys._base_executable, "-m", "venv", "--without-pip", root / "env"], root)
    site = Path(run([root / "env" / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    root).stdout.strip())
    # the dependencies, not this checkout: a plain path entry, whose own .pth files (the editable
    # install's) are not processed
    (site / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", root / "env" / "bin" / "python", "install", "-q", "--no-deps",
         "--no-index", wheel], root)
    work = root / "work"
    work.mkdir()
    return root / "env" / "bin", work, demo_cache


def test_the_package_and_its_configs_come_from_the_wheel(installed):
    bin_dir, work, _ = installed
    out = run([bin_dir / "python", "-c", "import fairchem_prune, fairchem_prune.resources as r; "
               "from fairchem.core.common.registry import registry; "
               "print(fairchem_prune.__file__); print(r.configs_dir()); "
               "print(registry.get_model_class('gemnet_oc_reduced').__module__); "
               "print(registry.get_trainer_class('distill').__name__)"], work).stdout.split()
    site = str(bin_dir.parent)
    assert out[0].startswith(site) and out[1].startswith(site) and out[1].endswith("fairchem_prune/configs")
    assert out[2:] == ["fairchem_prune.models.gemnet_oc_reduced", "DistillTrainer"]
    assert (Path(out[1]) / "s2ef" / "distill_base.yml").is_file()
    assert (Path(out[0]).parent / "demo" / "assets" / "teacher_6b.pt").is_file()


@pytest.fixture(scope="module")
def demo(installed):
    bin_dir, work, cache = installed
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": "", "FAIRCHEM_PRUNE_CACHE": str(cache)}
    result = subprocess.run([str(bin_dir / "fairchem-prune"), "demo", "--quick", "--out", "demo"], capture_output=True,
                            text=True, cwd=work, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return work / "demo", cache / "demo_data" / "quick-seed0" / "pretrain" / "val" / "emt_slabs.lmdb"


def test_demo_runs_from_an_empty_folder(demo):
    out, _ = demo
    assert "## Findings" in (out / "report.md").read_text() and (out / "teacher.pt").is_file()


def test_benchmark_slice_and_relevance_run_from_an_empty_folder(installed, demo):
    bin_dir, work, _ = installed
    out, slabs = demo
    cli = bin_dir / "fairchem-prune"
    run([cli, "benchmark", "--config", "configs/models/gemnet_oc_tiny.yml", "--data", slabs, "--blocks", "3,2",
         "--batch-size", "2", "--repeats", "1", "--finetune-repeats", "0", "--out", "bench.json"], work)
    assert [row["blocks"] for row in json.loads((work / "bench.json").read_text())["rows"]] == [3, 2]
    run([cli, "slice", "--checkpoint", out / "teacher.pt", "--num-blocks-kept", "2", "--output", "t2.pt"], work)
    run([cli, "relevance", "--checkpoint", "t2.pt", "--data", slabs, "--num-samples", "2", "--out", "rel.json"], work)
    assert len(json.loads((work / "rel.json").read_text())["blocks"]) == 3  # f_1 (embedding) + 2 blocks
