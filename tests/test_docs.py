"""The documentation site (``mkdocs.yml``, ``docs/``) builds strictly: a link to a missing page or file,
to a missing heading anchor, or a link mkdocs cannot resolve fails the build (``.ci/run`` builds it too);
the README's links into ``docs/`` reach existing pages and anchors."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                                reason="mkdocs is not installed (pip install -e .[docs], which ./setup.sh does)")


def build(root: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of the site configured in ``root/mkdocs.yml`` into ``site``."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(root / "mkdocs.yml"),
                           "--site-dir", str(site)], capture_output=True, text=True)


#: a README link into the docs: (path, anchor or "")
README_LINK = re.compile(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("docs") / "site"
    result = build(ROOT, site)
    assert result.returncode == 0, result.stderr[-3000:]
    return site


def test_the_site_builds_strictly(site):
    assert (site / "index.html").exists() and (site / "compress" / "index.html").exists()


def test_the_readme_links_reach_pages_and_anchors(site):
    links = README_LINK.findall((ROOT / "README.md").read_text())
    assert len(links) >= 10
    for path, anchor in links:
        assert (ROOT / path).is_file(), f"README links to {path}, which does not exist"
        if anchor:
            page = site / Path(path).relative_to("docs").with_suffix("") / "index.html"
            assert f'id="{anchor}"' in page.read_text(), f"README links to {path}#{anchor}, which has no such heading"


def test_a_broken_link_or_anchor_fails_the_build(tmp_path):
    """The validation settings catch what they are there for: a missing page and a missing anchor."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    with open(tmp_path / "docs" / "index.md", "a") as page:
        page.write("\n[a](no-such-page.md) and [b](setup.md#no-such-heading)\n")
    result = build(tmp_path, tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr and "no-such-heading" in result.stderr, result.stderr[-3000:]
