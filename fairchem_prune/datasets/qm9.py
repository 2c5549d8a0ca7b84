"""QM9 (the original ``dsgdb9nsd_NNNNNN.xyz`` files, in a folder or the ``.tar.bz2``). Line 2 of
each file is ``gdb ID A B C mu alpha homo lumo gap r2 zpve U0 U H G Cv`` (GHz, D, bohr^3, hartree,
bohr^2, cal/mol/K); numbers may be written like ``1.5*^-6``. One target per data set; JMP's split:
10,000 val, 10,000 test, the rest train."""

from __future__ import annotations

import tarfile
from pathlib import Path

from ase import Atoms, units

from fairchem_prune.console import progress
from fairchem_prune.datasets.raw import finite, labelled, require_file
from fairchem_prune.datasets.splits import SplitSpec
from fairchem_prune.errors import PruneError

SPLIT = SplitSpec(train=None, val=10_000, test=10_000)
#: the 15 properties of line 2 (after ``gdb ID``) in order
PROPERTIES = ("A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
#: energies, converted from hartree to eV; the other targets keep QM9's units
ENERGIES = ("homo", "lumo", "gap", "zpve", "U0", "U", "H", "G")


def read(raw: str | Path, target: str = "U0") -> list[Atoms]:
    """The molecules of QM9 (sorted by file name) labelled with ``target`` (eV for energies)."""
    path = require_file(raw)
    if target not in PROPERTIES:
        raise PruneError(f"unknown QM9 target {target!r}; choose one of {', '.join(PROPERTIES)}")
    parsed = {where: parse(text, where, target) for where, text in progress(_files(path), desc=f"reading {path.name}")}
    return [parsed[where] for where in sorted(parsed)]


def parse(text: str, where: str, target: str) -> Atoms:
    """One QM9 ``.xyz`` file's molecule (positions in Å) labelled with ``target``."""
    lines = text.splitlines()
    try:
        count = int(lines[0])
        header = lines[1].split()
        atoms = [line.split() for line in lines[2:2 + count]]
    except (IndexError, ValueError):
        raise PruneError(f"{where}: not a QM9 .xyz file (line 1 must be the atom count)") from None
    if len(header) != 17 or header[0] != "gdb":
        raise PruneError(f"{where}: line 2 has {len(header)} fields, expected 17 ('gdb ID A B C mu ... Cv')")
    if len(atoms) != count or any(len(atom) != 5 for atom in atoms):
        raise PruneError(f"{where}: expected {count} atom lines 'symbol x y z charge' after line 2")
    value = finite(_number(header[2 + PROPERTIES.index(target)], where), where, target)
    if target in ENERGIES:
        value *= units.Hartree
    positions = [[_number(x, where) for x in atom[1:4]] for atom in atoms]
    return labelled(Atoms(symbols=[atom[0] for atom in atoms], positions=positions), value)


def split(raw: str | Path, sizes: dict[str, int | None]) -> SplitSpec:
    return SPLIT


def _number(text: str, where: str) -> float:
    try:
        return float(text.replace("*^", "e"))
    except ValueError:
        raise PruneError(f"{where}: {text!r} is not a number") from None


def _files(path: Path):
    """(name, text) of each ``.xyz`` in the folder or tar archive ``path`` (read in archive order:
    a compressed tar cannot seek)."""
    if path.is_dir():
        files = sorted(path.glob("*.xyz"))
        if not files:
            raise PruneError(f"{path} holds no .xyz files; pass the folder of dsgdb9nsd_*.xyz or the .tar.bz2")
        for file in files:
            yield str(file), file.read_text()
        return
    try:
        archive = tarfile.open(path)
    except tarfile.TarError as err:
        raise PruneError(f"{path} is neither a folder nor a readable tar archive ({err})") from None
    with archive:
        found = False
        for member in archive:
            if member.isfile() and member.name.endswith(".xyz"):
                found = True
                yield f"{path}:{member.name}", archive.extractfile(member).read().decode()
        if not found:
            raise PruneError(f"{path} holds no .xyz files")
