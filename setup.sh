#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment at .venv/ and installs fairchem-prune
# into it, editable, with everything it needs.
#
#   ./setup.sh [--wheels DIR] [--python PYTHON]
#
# torch_scatter / torch_sparse / torch_cluster have no binary release on PyPI. They are taken, in
# this order, from: a folder of ready wheels (--wheels DIR or $FAIRCHEM_PRUNE_WHEELS, searched
# recursively), the local wheel cache ($FAIRCHEM_PRUNE_CACHE, default ~/.cache/fairchem-prune/wheels),
# or built from source (CPU-only, ~30 min on 2 cores) and then kept in that cache.
# GPU users: install the CUDA builds of those three from PyG's wheel index into .venv instead, e.g.
#   .venv/bin/pip install torch_scatter torch_sparse torch_cluster \
#       -f https://data.pyg.org/whl/torch-2.4.0+cu121.html
# A re-run on a ready environment only checks it (seconds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
WHEELS="${FAIRCHEM_PRUNE_WHEELS:-}"
PYTHON="${PYTHON:-python3.11}"
CACHE="${FAIRCHEM_PRUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fairchem-prune}/wheels"

while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="$2"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown argument '$1' (see ./setup.sh --help)" >&2; exit 2 ;;
    esac
done

# Versions that must match torch 2.4.x (fairchem-core 1.10 pins torch~=2.4.0).
TORCH="torch==2.4.1"
EXTENSIONS=("torch_scatter==2.1.2" "torch_sparse==0.6.18" "torch_cluster==1.6.3")

stamp_now() { cat "$ROOT/pyproject.toml" "$ROOT/setup.sh" | sha256sum | cut -d' ' -f1; }
STAMP="$VENV/.fairchem-prune-setup"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_now)" ] \
    && "$VENV/bin/python" -c "import torch_scatter, torch_sparse, torch_cluster, fairchem.core, fairchem_prune" 2>/dev/null; then
    echo "setup.sh: environment .venv is ready"
    exit 0
fi

command -v "$PYTHON" >/dev/null || { echo "setup.sh: $PYTHON not found; pass --python PATH to a Python 3.10-3.12" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
PYTAG="cp$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"

echo "setup.sh: installing torch and fairchem-core into .venv"
"${PIP[@]}" install -q "$TORCH" "fairchem-core==1.10.0" "numpy<2" "scipy<1.17" "torch-geometric<2.8" \
    wheel setuptools hatchling editables

# Find a wheel named like torch_scatter-2.1.2-cp311-*.whl in a folder tree.
find_wheel() { # $1 dir, $2 name, $3 version
    [ -n "$1" ] && [ -d "$1" ] || return 1
    find "$1" -name "$2-$3-$PYTAG-$PYTAG-*.whl" 2>/dev/null | sort | head -n 1 | grep .
}

mkdir -p "$CACHE"
to_install=()
for spec in "${EXTENSIONS[@]}"; do
    name="${spec%%==*}"; version="${spec##*==}"
    if wheel="$(find_wheel "$WHEELS" "$name" "$version")"; then
        echo "setup.sh: $name from $wheel"
    elif wheel="$(find_wheel "$CACHE" "$name" "$version")"; then
        echo "setup.sh: $name from the cache $wheel"
    else
        echo "setup.sh: building $name $version from source (CPU only; about 10 minutes on 2 cores)"
        FORCE_ONLY_CPU=1 "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$CACHE" "$spec"
        wheel="$(find_wheel "$CACHE" "$name" "$version")"
    fi
    to_install+=("$wheel")
done
"${PIP[@]}" install -q --no-deps "${to_install[@]}"

echo "setup.sh: installing fairchem-prune (editable)"
"${PIP[@]}" install -q --no-build-isolation -e "$ROOT[test]"

"$VENV/bin/python" -c "import torch_scatter, torch_sparse, torch_cluster, fairchem.core, fairchem_prune"
stamp_now > "$STAMP"
echo "setup.sh: environment .venv is ready"
