#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment at .venv/ and installs fairchem-prune
# into it, editable, with everything it needs (the tests' and the documentation's tools too).
#
#   ./setup.sh [--wheels DIR] [--python PYTHON]
#   ./setup.sh --fairchem 2 [--python PYTHON]   # the fairchem-core 2.x host instead: .venv-fairchem2/ with
#                                               # fairchem-core 2.24 and the torch it pins (CPU build), ~4 min
#   ./setup.sh --fetch-extensions DIR   # only look the three extension wheels up (no source build, no
#                                       # install; needs .venv's torch) and copy them to DIR
#
# torch_scatter / torch_sparse / torch_cluster have no binary release on PyPI. They are taken, in
# this order, from: a folder of ready wheels (--wheels DIR or $FAIRCHEM_PRUNE_WHEELS, searched
# recursively), PyG's wheel index for the installed torch build (CUDA or CPU; the page that
# tools/pyg_find_links.py names, under $FAIRCHEM_PRUNE_PYG_INDEX, default https://data.pyg.org/whl;
# downloaded wheels are cached), the local wheel cache ($FAIRCHEM_PRUNE_CACHE, default
# ~/.cache/fairchem-prune/wheels), or built from source (CPU-only, ~30 min on 2 cores) and then kept in
# that cache. Without internet the index is given up after a 10 s timeout.
# A re-run on a ready environment only checks it (seconds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
WHEELS="${FAIRCHEM_PRUNE_WHEELS:-}"
PYTHON="${PYTHON:-python3.11}"
CACHE="${FAIRCHEM_PRUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fairchem-prune}/wheels"
FETCH_ONLY=""
HOST=1

while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="$2"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        --fetch-extensions) FETCH_ONLY="$2"; shift 2 ;;
        --fairchem) HOST="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown argument '$1' (see ./setup.sh --help)" >&2; exit 2 ;;
    esac
done

stamp_now() { cat "$ROOT/pyproject.toml" "$ROOT/setup.sh" | sha256sum | cut -d' ' -f1; }

# The fairchem-core 2.x host: no PyG extensions; torch 2.13.0's CPU build (the one fairchem-core 2.24's
# torch~=2.13 admits; a plain `torch` from PyPI would be a CUDA build of several GB).
if [ "$HOST" = "2" ]; then
    VENV="$ROOT/.venv-fairchem2"
    STAMP="$VENV/.fairchem-prune-setup"
    CHECK="import fairchem.core, fairchem.core.units.mlip_unit, fairchem_prune.hosts as h; assert h.installed() == 2"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_now)" ] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
        echo "setup.sh: environment .venv-fairchem2 is ready"
        exit 0
    fi
    command -v "$PYTHON" >/dev/null || { echo "setup.sh: $PYTHON not found; pass --python PATH to a Python 3.11-3.12" >&2; exit 2; }
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
    echo "setup.sh: installing torch 2.13 and fairchem-core 2.24 into .venv-fairchem2 (about 4 minutes)"
    "${PIP[@]}" install -q "torch==2.13.0" "fairchem-core==2.24.0" hatchling editables
    echo "setup.sh: installing fairchem-prune (editable)"
    "${PIP[@]}" install -q --no-build-isolation -e "$ROOT[fairchem2,test]"
    "$VENV/bin/python" -c "$CHECK"
    stamp_now > "$STAMP"
    echo "setup.sh: environment .venv-fairchem2 is ready"
    exit 0
fi
[ "$HOST" = "1" ] || { echo "setup.sh: --fairchem takes 1 or 2, got '$HOST'" >&2; exit 2; }

# Versions that must match torch 2.4.x (fairchem-core 1.10 pins torch~=2.4.0).
TORCH="torch==2.4.1"
EXTENSIONS=("torch_scatter==2.1.2" "torch_sparse==0.6.18" "torch_cluster==1.6.3")

# Find a wheel named like torch_scatter-2.1.2-cp311-*.whl (PyG's: 2.1.2+pt24cu121) in a folder tree.
find_wheel() { # $1 dir, $2 name, $3 version, [$4 find's -maxdepth]
    [ -n "$1" ] && [ -d "$1" ] || return 1
    find "$1" -maxdepth "${4:-100}" \( -name "$2-$3-$PYTAG-$PYTAG-*.whl" -o -name "$2-$3+*-$PYTAG-$PYTAG-*.whl" \) \
        2>/dev/null | sort | head -n 1 | grep .
}

# PyG's page for this torch build (PYG_LINKS); its wheels are cached in a folder of their own
# (PYG_CACHE), so that a CPU build from source and a CUDA build from the index are not mixed up.
from_pyg_index() { # $1 spec: download its wheel from PyG's page into PYG_CACHE
    "${PIP[@]}" download -q --no-deps --no-index --only-binary :all: --timeout 10 --retries 0 \
        -f "$PYG_LINKS" -d "$PYG_CACHE" "$1" >/dev/null 2>&1
}

# Fills to_install with the three wheels; $1 = "no-build": give up (status 1) instead of building.
find_extensions() {
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
    PYTAG="cp$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
    PYG_LINKS="$("$VENV/bin/python" "$ROOT/tools/pyg_find_links.py" --index "${FAIRCHEM_PRUNE_PYG_INDEX:-https://data.pyg.org/whl}")"
    PYG_CACHE="$CACHE/$(basename "$PYG_LINKS" .html)"
    mkdir -p "$CACHE"
    to_install=()
    for spec in "${EXTENSIONS[@]}"; do
        name="${spec%%==*}"; version="${spec##*==}"
        if wheel="$(find_wheel "$WHEELS" "$name" "$version")"; then
            echo "setup.sh: $name from $wheel"
        elif wheel="$(find_wheel "$PYG_CACHE" "$name" "$version")"; then
            echo "setup.sh: $name from the cache $wheel"
        elif from_pyg_index "$spec" && wheel="$(find_wheel "$PYG_CACHE" "$name" "$version")"; then
            echo "setup.sh: $name from PyG's wheel index ($PYG_LINKS)"
        elif wheel="$(find_wheel "$CACHE" "$name" "$version" 1)"; then
            echo "setup.sh: $name from the cache $wheel"
        elif [ "${1:-}" = "no-build" ]; then
            echo "setup.sh: $name $version: no wheel in the folder, PyG's index ($PYG_LINKS) or the cache" >&2
            return 1
        else
            echo "setup.sh: building $name $version from source (CPU only; the three take about 30 minutes on 2 cores)"
            FORCE_ONLY_CPU=1 "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$CACHE" "$spec"
            wheel="$(find_wheel "$CACHE" "$name" "$version" 1)"
        fi
        to_install+=("$wheel")
    done
}

if [ -n "$FETCH_ONLY" ]; then
    [ -x "$VENV/bin/python" ] || { echo "setup.sh: --fetch-extensions needs .venv (run ./setup.sh first)" >&2; exit 2; }
    find_extensions no-build || exit 1
    mkdir -p "$FETCH_ONLY" && cp "${to_install[@]}" "$FETCH_ONLY/"
    exit 0
fi

STAMP="$VENV/.fairchem-prune-setup"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_now)" ] \
    && "$VENV/bin/python" -c "import torch_scatter, torch_sparse, torch_cluster, fairchem.core, fairchem_prune" 2>/dev/null; then
    echo "setup.sh: environment .venv is ready"
    exit 0
fi

command -v "$PYTHON" >/dev/null || { echo "setup.sh: $PYTHON not found; pass --python PATH to a Python 3.10-3.12" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

echo "setup.sh: installing torch and fairchem-core into .venv"
"${PIP[@]}" install -q "$TORCH" "fairchem-core==1.10.0" "numpy<2" "scipy<1.17" "torch-geometric<2.8" \
    wheel setuptools hatchling editables

find_extensions
"${PIP[@]}" install -q --no-deps "${to_install[@]}"

echo "setup.sh: installing fairchem-prune (editable)"
"${PIP[@]}" install -q --no-build-isolation -e "$ROOT[fairchem1,test,docs]"

"$VENV/bin/python" -c "import torch_scatter, torch_sparse, torch_cluster, fairchem.core, fairchem_prune"
stamp_now > "$STAMP"
echo "setup.sh: environment .venv is ready"
