"""Rules of the search space (QM9's) and molecule identity.

Every molecule in this application is keyed by its canonical SMILES: RDKit's canonical form,
without stereochemistry (QM9 and the MolDQN actions carry none), hydrogens implicit.

The search space is QM9's: elements H, C, N, O and F only, at most 9 heavy atoms, neutral,
closed shell (no radicals), one connected fragment.
"""
from __future__ import annotations

import functools
import logging
from collections import Counter
from typing import Dict, List

from rdkit import Chem, RDLogger

logger = logging.getLogger(__name__)

ALLOWED_ELEMENTS = ('C', 'N', 'O', 'F', 'H')
"""Elements of the search space"""
HEAVY_ELEMENTS = ('C', 'N', 'O', 'F')
"""Heavy (non-hydrogen) elements of the search space"""
MAX_HEAVY_ATOMS = 9
"""Largest number of heavy atoms in the search space (QM9's cap)"""

RDLogger.DisableLog('rdApp.*')  # We report errors ourselves, in one line


class InvalidMoleculeError(ValueError):
    """A molecule that is not valid chemistry or lies outside the search space"""


def parse_smiles(smiles: str) -> Chem.Mol:
    """Parse a SMILES string into a sanitised RDKit molecule

    Args:
        smiles: SMILES string
    Returns:
        Sanitised molecule, hydrogens implicit
    Raises:
        InvalidMoleculeError: if RDKit cannot parse or sanitise it
    """
    if not isinstance(smiles, str) or not smiles.strip():
        raise InvalidMoleculeError(f'Invalid SMILES {smiles!r}: empty')
    mol = Chem.MolFromSmiles(smiles.strip())
    if mol is None:
        raise InvalidMoleculeError(f'Invalid SMILES {smiles!r}: RDKit cannot parse or sanitise it')
    return mol


def atoms(mol: Chem.Mol) -> List[Chem.Atom]:
    """The atoms of a molecule (twice as fast as iterating ``mol.GetAtoms()``, whose Python wrapper checks the
    sequence's length at every step: it matters in the neighbourhood enumeration, which checks thousands)"""
    return [mol.GetAtomWithIdx(i) for i in range(mol.GetNumAtoms())]


def bonds(mol: Chem.Mol) -> List[Chem.Bond]:
    """The bonds of a molecule (see :func:`atoms`)"""
    return [mol.GetBondWithIdx(i) for i in range(mol.GetNumBonds())]


def check_mol(mol: Chem.Mol, max_heavy_atoms: int = MAX_HEAVY_ATOMS) -> None:
    """Check that a molecule lies in the search space

    Args:
        mol: Sanitised RDKit molecule
        max_heavy_atoms: Largest number of heavy atoms allowed
    Raises:
        InvalidMoleculeError: naming the first rule broken
    """
    mol_atoms = atoms(mol)
    for atom in mol_atoms:
        symbol = atom.GetSymbol()
        if symbol not in ALLOWED_ELEMENTS:
            raise InvalidMoleculeError(f'{symbol} is not an allowed element (allowed: {", ".join(ALLOWED_ELEMENTS)})')
    n_heavy = mol.GetNumHeavyAtoms()
    if n_heavy == 0:
        raise InvalidMoleculeError('The molecule has no heavy atom (at least one of C, N, O, F is required)')
    if n_heavy > max_heavy_atoms:
        raise InvalidMoleculeError(f'{n_heavy} heavy atoms is more than the cap of {max_heavy_atoms}')
    charge = Chem.GetFormalCharge(mol)
    if charge != 0 or any(a.GetFormalCharge() != 0 for a in mol_atoms):
        raise InvalidMoleculeError(f'Charged species are not allowed (total formal charge {charge:+d}, '
                                   f'or an atom carries a formal charge)')
    n_radical = sum(a.GetNumRadicalElectrons() for a in mol_atoms)
    if n_radical:
        raise InvalidMoleculeError(f'Radicals are not allowed ({n_radical} unpaired electron(s))')
    n_frags = len(Chem.GetMolFrags(mol))
    if n_frags > 1:
        raise InvalidMoleculeError(f'The molecule has {n_frags} fragments; only one connected fragment is allowed')


def canonicalize(mol: Chem.Mol) -> str:
    """Canonical SMILES of a molecule: the key used everywhere in the application

    Args:
        mol: RDKit molecule
    Returns:
        Canonical SMILES without stereochemistry
    """
    return Chem.MolToSmiles(mol, isomericSmiles=False)


def validate_smiles(smiles: str, max_heavy_atoms: int = MAX_HEAVY_ATOMS) -> str:
    """Check that a SMILES string is a valid molecule of the search space

    Args:
        smiles: SMILES string
        max_heavy_atoms: Largest number of heavy atoms allowed
    Returns:
        The canonical SMILES of the molecule
    Raises:
        InvalidMoleculeError: with a one-line message that names the rule broken
    """
    mol = parse_smiles(smiles)
    try:
        check_mol(mol, max_heavy_atoms)
    except InvalidMoleculeError as exc:
        raise InvalidMoleculeError(f'{smiles}: {exc}') from None
    return canonicalize(mol)


def is_valid(smiles: str, max_heavy_atoms: int = MAX_HEAVY_ATOMS) -> bool:
    """Whether a SMILES string is a valid molecule of the search space"""
    try:
        validate_smiles(smiles, max_heavy_atoms)
    except InvalidMoleculeError:
        return False
    return True


def count_elements(smiles: str) -> Dict[str, int]:
    """Count every element in a molecule, hydrogens included

    Args:
        smiles: SMILES string
    Returns:
        Map of element symbol to count
    """
    mol = Chem.AddHs(parse_smiles(smiles))
    return dict(Counter(a.GetSymbol() for a in mol.GetAtoms()))


@functools.lru_cache(maxsize=65536)
def violates_bredt(smiles: str) -> bool:
    """Whether a molecule has a double bond or an aromatic atom at a bridgehead of a bridged ring system

    Bredt's rule: in small bridged bicycles (every bridged system of the search space is small) such a bridgehead
    is too strained to exist. GFN2-xTB relaxations of these molecules break bonds (all 11 failed QC tasks of a
    per-atom search, e.g. ``c1c2nc3n1nc2CC3``), and only 66 of QM9's 130,831 molecules (0.05 %) have one.

    Args:
        smiles: SMILES string of a valid molecule
    Returns:
        True if any pair of rings shares three or more atoms (a bridge) and an end of the shared path is aromatic or
        carries a double or triple bond
    """
    mol = parse_smiles(smiles)
    rings = [set(r) for r in mol.GetRingInfo().AtomRings()]
    for i, first in enumerate(rings):
        for second in rings[i + 1:]:
            shared = first & second
            if len(shared) < 3:  # Fused rings share one bond at most: not bridged
                continue
            for index in shared:
                atom = mol.GetAtomWithIdx(index)
                if sum(n.GetIdx() in shared for n in atom.GetNeighbors()) != 1:
                    continue  # Not an end of the shared path
                if atom.GetIsAromatic() or any(b.GetBondTypeAsDouble() > 1 for b in atom.GetBonds()):
                    return True
    return False


@functools.lru_cache(maxsize=65536)
def count_atoms(smiles: str) -> int:
    """Number of atoms in a molecule, hydrogens included (cached: screening divides thousands of predictions)"""
    mol = parse_smiles(smiles)
    return mol.GetNumAtoms() + sum(a.GetTotalNumHs() for a in mol.GetAtoms())
