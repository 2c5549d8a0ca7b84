"""setup.sh's lookup of torch_scatter / torch_sparse / torch_cluster: PyG's index page for the installed
torch build (tools/pyg_find_links.py), tested with a local folder laid out like that index holding
stand-in wheels; its cache; and a quick give-up where the index has no page for this build."""

import base64
import hashlib
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
FIND_LINKS = REPO / "tools" / "pyg_find_links.py"
EXTENSIONS = {"torch_scatter": "2.1.2", "torch_sparse": "0.6.18", "torch_cluster": "1.6.3"}


def find_links(*args) -> str:
    return subprocess.run([sys.executable, str(FIND_LINKS), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("torch, cuda, page", [
    ("2.4.1+cu121", "12.1", "torch-2.4.0+cu121.html"),
    ("2.4.1+cpu", None, "torch-2.4.0+cpu.html"),
    ("2.4.1", None, "torch-2.4.0+cpu.html"),
    ("2.5.0+cu118", "11.8", "torch-2.5.0+cu118.html"),
])
def test_the_page_follows_the_torch_build(torch, cuda, page):
    args = ["--torch", torch] + (["--cuda", cuda] if cuda else [])
    assert find_links(*args) == f"https://data.pyg.org/whl/{page}"
    assert find_links(*args, "--index", "/mirror/whl/") == f"/mirror/whl/{page}"


def stand_in_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal valid wheel ``name-version+pt24...-cp3X-cp3X-linux_x86_64.whl`` (PyG's naming)."""
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    path = folder / f"{name}-{version}+pt24test-{tag}-{tag}-linux_x86_64.whl"
    info = f"{name}-{version}+pt24test.dist-info"
    files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}+pt24test\n",
             f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}-{tag}-linux_x86_64\n"}
    record = []
    for file, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{file},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in files.items():
            archive.writestr(file, text)
    return path


def fetch(tmp_path, index: Path, cache: Path):
    env = {**os.environ, "FAIRCHEM_PRUNE_PYG_INDEX": str(index), "FAIRCHEM_PRUNE_CACHE": str(cache),
           "FAIRCHEM_PRUNE_WHEELS": ""}
    start = time.perf_counter()
    result = subprocess.run(["bash", str(REPO / "setup.sh"), "--fetch-extensions", str(tmp_path / "got")],
                            capture_output=True, text=True, env=env)
    return result, time.perf_counter() - start


def test_wheels_come_from_the_index_page_then_from_its_cache(tmp_path):
    page = find_links("--index", str(tmp_path / "index"))  # the installed torch's page
    (tmp_path / "index").mkdir()
    wheels = [stand_in_wheel(tmp_path / "index", n, v) for n, v in EXTENSIONS.items()]
    Path(page).write_text("<html><body>\n" + "".join(f'<a href="{w.name}">{w.name}</a><br>\n' for w in wheels)
                          + "</body></html>\n")
    result, _ = fetch(tmp_path, tmp_path / "index", tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in EXTENSIONS:
        assert f"setup.sh: {name} from PyG's wheel index ({page})" in result.stdout
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == sorted(w.name for w in wheels)
    cached = tmp_path / "cache" / "wheels" / Path(page).stem
    assert sorted(p.name for p in cached.iterdir()) == sorted(w.name for w in wheels)
    # the second time from the cache, with the index gone
    for wheel in wheels:
        wheel.unlink()
    again, _ = fetch(tmp_path, tmp_path / "index", tmp_path / "cache")
    assert again.returncode == 0 and again.stdout.count("from the cache") == 3, again.stdout + again.stderr


def test_an_index_without_this_build_is_given_up_at_once(tmp_path):
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "torch-1.0.0+cpu.html").write_text("<html></html>")
    result, seconds = fetch(tmp_path, tmp_path / "index", tmp_path / "cache")
    assert result.returncode == 1 and seconds < 30
    assert result.stderr.strip().splitlines()[-1].startswith("setup.sh: torch_scatter 2.1.2: no wheel in the folder, PyG's index")
