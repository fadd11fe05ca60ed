"""Molecule-editing environment of MolDQN (Zhou et al., Sci. Rep. 2019, 9, 10752).

A state is a valid molecule of the search space, keyed by canonical SMILES (``''`` is the empty
molecule an episode may start from). An action is the molecule it produces, one edit away:

- add an atom (C, N, O, F) bonded to an existing atom by a single, double or triple bond, as the
  valences allow (from the empty molecule: a lone atom);
- add a bond between two atoms, or raise the order of an existing bond (new rings only of the
  allowed sizes);
- lower the order of a bond or remove it (if the molecule falls apart, the larger piece is kept);
- no modification (the state itself).

By default, strained products are rejected: a triple bond in a ring or a cumulated ring atom
(C1#CC1, C1=C=C1; QM9 holds none), an aromatic atom in a 3- or 4-membered ring, or a ring double bond
at an atom shared by rings one of which has 3 or 4 atoms. The last two exclude 1.7 % of QM9 (small
fused rings), but in searches they were mostly polycyclic cages that RDKit cannot embed or that
fall apart when relaxed: QC failures that cost budget and teach the model nothing.

Every product is sanitised, checked with :func:`moldesign.chem.check_mol` and deduplicated by
canonical SMILES. Enumerations and fingerprints are cached by SMILES in the environment.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from itertools import combinations
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from moldesign.chem import (HEAVY_ELEMENTS, MAX_HEAVY_ATOMS, InvalidMoleculeError, atoms, bonds, canonicalize,
                            check_mol, parse_smiles, validate_smiles)

logger = logging.getLogger(__name__)

EMPTY = ''
"""The empty molecule, where episodes start by default"""

MAX_VALENCE = {'C': 4, 'N': 3, 'O': 2, 'F': 1}
"""Valence of each heavy element of the search space (neutral, closed shell)"""

_BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}

FINGERPRINT_RADIUS = 3
FINGERPRINT_LENGTH = 2048


class ActionSet:
    """Valid actions from one state: product SMILES and their fingerprints (sparse, CSR layout)

    Attributes:
        smiles: Canonical SMILES of the products
        indices: On-bits of all products' Morgan fingerprints, concatenated (int32)
        data: Value of each on-bit (float32): its count, or 1 for bit fingerprints
        indptr: Row pointers into ``indices`` (length ``len(smiles) + 1``)
    """

    __slots__ = ('smiles', 'indices', 'data', 'indptr')

    def __init__(self, smiles: Tuple[str, ...], indices: np.ndarray, data: np.ndarray, indptr: np.ndarray):
        self.smiles = smiles
        self.indices = indices
        self.data = data
        self.indptr = indptr

    def __len__(self) -> int:
        return len(self.smiles)

    def row(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """On-bits of the fingerprint of product ``i`` and their values"""
        start, end = self.indptr[i], self.indptr[i + 1]
        return self.indices[start:end], self.data[start:end]


def _is_strained(mol: Chem.Mol) -> bool:
    """Whether a molecule holds a triple bond in a ring, a ring atom with two double bonds, an aromatic
    atom in a 3- or 4-membered ring, or a ring double bond at an atom shared by rings one of which has
    3 or 4 atoms (anti-Bredt bridgeheads)"""
    for bond in bonds(mol):
        if bond.GetBondType() == Chem.BondType.TRIPLE and bond.IsInRing():
            return True
    ring_info = mol.GetRingInfo()
    for atom in atoms(mol):
        if not atom.IsInRing():
            continue
        if sum(b.GetBondType() == Chem.BondType.DOUBLE for b in atom.GetBonds()) >= 2:
            return True
        index = atom.GetIdx()
        if ring_info.MinAtomRingSize(index) > 4:
            continue
        if atom.GetIsAromatic():
            return True
        if ring_info.NumAtomRings(index) >= 2 and \
                any(b.GetBondType() == Chem.BondType.DOUBLE and b.IsInRing() for b in atom.GetBonds()):
            return True
    return False


class MoleculeEnv:
    """Enumerates the molecules one edit away from a molecule (see the module docstring)

    Args:
        atom_types: Elements that may be added
        max_heavy_atoms: Largest number of heavy atoms
        allowed_ring_sizes: Sizes of the rings a new bond may close (by default 3 to 7: no rings > 7)
        allow_removal: Whether bonds may be lowered or removed
        allow_no_modification: Whether "keep the molecule" is an action
        allow_bonds_between_rings: Whether a new bond may join two atoms that are both in rings
        allow_strained: Whether products may hold a triple bond in a ring or a ring atom with two double
            bonds (cumulenes); such molecules (e.g. C1#CC1) are absent from QM9 and they fool surrogate models
        count_fingerprint: Use Morgan count fingerprints (how many times each environment occurs), so
            that the network can tell a C8 chain from a C9 chain; False: bit fingerprints as in MolDQN
        cache_size: Number of states whose action sets are cached
    """

    def __init__(self, atom_types: Sequence[str] = HEAVY_ELEMENTS, max_heavy_atoms: int = MAX_HEAVY_ATOMS,
                 allowed_ring_sizes: Sequence[int] = (3, 4, 5, 6, 7), allow_removal: bool = True,
                 allow_no_modification: bool = True, allow_bonds_between_rings: bool = True,
                 allow_strained: bool = False, count_fingerprint: bool = True, cache_size: int = 20000):
        unknown = set(atom_types) - set(MAX_VALENCE)
        if unknown:
            raise ValueError(f'Atom types {sorted(unknown)} are not heavy elements of the search space '
                             f'({", ".join(MAX_VALENCE)})')
        if not 1 <= max_heavy_atoms <= MAX_HEAVY_ATOMS:
            raise ValueError(f'max_heavy_atoms must be between 1 and {MAX_HEAVY_ATOMS}, got {max_heavy_atoms}')
        self.atom_types = tuple(atom_types)
        self.max_heavy_atoms = max_heavy_atoms
        self.allowed_ring_sizes = frozenset(allowed_ring_sizes)
        self.allow_removal = allow_removal
        self.allow_no_modification = allow_no_modification
        self.allow_bonds_between_rings = allow_bonds_between_rings
        self.allow_strained = allow_strained
        self.count_fingerprint = count_fingerprint
        self.cache_size = cache_size
        self._cache: 'OrderedDict[str, ActionSet]' = OrderedDict()
        self._fingerprints: Dict[str, np.ndarray] = {}
        self._generator = rdFingerprintGenerator.GetMorganGenerator(radius=FINGERPRINT_RADIUS,
                                                                    fpSize=FINGERPRINT_LENGTH)

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_cache'] = OrderedDict()
        state['_fingerprints'] = {}
        del state['_generator']
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._generator = rdFingerprintGenerator.GetMorganGenerator(radius=FINGERPRINT_RADIUS,
                                                                    fpSize=FINGERPRINT_LENGTH)

    # ----- Fingerprints
    def fingerprint(self, smiles: str, mol: Optional[Chem.Mol] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Morgan fingerprint (radius 3, 2048 bits) of a molecule in sparse form, cached by SMILES

        Args:
            smiles: Canonical SMILES (``''`` for the empty molecule: no bits)
            mol: The molecule, if already parsed
        Returns:
            - Sorted on-bit indices (int32)
            - Their values (float32): counts, or ones for bit fingerprints
        """
        fp = self._fingerprints.get(smiles)
        if fp is None:
            if smiles == EMPTY:
                fp = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
            else:
                if mol is None:
                    mol = parse_smiles(smiles)
                if self.count_fingerprint:
                    counts = self._generator.GetCountFingerprint(mol).GetNonzeroElements()
                    bits = sorted(counts)
                    fp = (np.array(bits, dtype=np.int32), np.array([counts[b] for b in bits], dtype=np.float32))
                else:
                    bits = np.array(self._generator.GetFingerprint(mol).GetOnBits(), dtype=np.int32)
                    fp = bits, np.ones(len(bits), dtype=np.float32)
            if len(self._fingerprints) >= 10 * self.cache_size:
                self._fingerprints.clear()
            self._fingerprints[smiles] = fp
        return fp

    # ----- Actions
    def check_state(self, smiles: str) -> str:
        """Validate a starting molecule

        Args:
            smiles: SMILES string, or ``''`` for the empty molecule
        Returns:
            Canonical SMILES
        Raises:
            InvalidMoleculeError: if it is not a molecule of this environment
        """
        return EMPTY if smiles == EMPTY else validate_smiles(smiles, self.max_heavy_atoms)

    def get_actions(self, smiles: str) -> ActionSet:
        """All molecules one edit away from a state, with their fingerprints (cached)

        Args:
            smiles: Canonical SMILES of the state (``''`` for the empty molecule)
        Returns:
            The action set (products in a deterministic order)
        """
        actions = self._cache.get(smiles)
        if actions is not None:
            self._cache.move_to_end(smiles)
            return actions
        products = self.enumerate_products(smiles)
        names = tuple(products)
        fps = [self.fingerprint(s, m) for s, m in products.items()]
        indptr = np.zeros(len(fps) + 1, dtype=np.int32)
        indptr[1:] = np.cumsum([len(f[0]) for f in fps])
        if fps:
            indices = np.concatenate([f[0] for f in fps]).astype(np.int32)
            data = np.concatenate([f[1] for f in fps]).astype(np.float32)
        else:
            indices, data = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        actions = ActionSet(names, indices, data, indptr)
        self._cache[smiles] = actions
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return actions

    def cached_states(self) -> List[str]:
        """States whose action sets are in the cache (least recently used first)"""
        return list(self._cache)

    def valid_actions(self, smiles: str) -> List[str]:
        """Canonical SMILES of the molecules one edit away from a state"""
        return list(self.get_actions(smiles).smiles)

    def enumerate_products(self, smiles: str) -> Dict[str, Chem.Mol]:
        """Enumerate the products of every action (uncached)

        Args:
            smiles: Canonical SMILES of the state (``''`` for the empty molecule)
        Returns:
            Map of canonical SMILES to sanitised molecule, in a deterministic order
        """
        products: Dict[str, Chem.Mol] = {}
        rejected: Set[str] = set()
        if smiles == EMPTY:
            for element in self.atom_types:
                self._accept(Chem.RWMol(Chem.MolFromSmiles(element)), products, rejected)
            return products

        mol = Chem.RWMol(parse_smiles(smiles))
        Chem.Kekulize(mol, clearAromaticFlags=True)
        for atom in atoms(mol):  # Let RDKit recompute hydrogens after each edit
            atom.SetNumExplicitHs(0)
            atom.SetNoImplicit(False)
        free = [MAX_VALENCE[a.GetSymbol()] - int(sum(b.GetBondTypeAsDouble() for b in a.GetBonds()))
                for a in atoms(mol)]
        n_atoms = mol.GetNumAtoms()

        if self.allow_no_modification:
            self._accept(Chem.RWMol(mol), products, rejected)

        # Add an atom
        if n_atoms < self.max_heavy_atoms:
            for i in range(n_atoms):
                for element in self.atom_types:
                    for order in range(1, min(free[i], MAX_VALENCE[element], 3) + 1):
                        new = Chem.RWMol(mol)
                        j = new.AddAtom(Chem.Atom(element))
                        new.AddBond(i, j, _BOND_TYPES[order])
                        self._accept(new, products, rejected)

        # Add a bond or raise its order
        ring_info = mol.GetRingInfo()
        distances = Chem.GetDistanceMatrix(mol) if n_atoms > 1 else None
        for i, j in combinations(range(n_atoms), 2):
            increase = min(free[i], free[j])
            if increase <= 0:
                continue
            bond = mol.GetBondBetweenAtoms(i, j)
            if bond is None:
                if not self.allow_bonds_between_rings and \
                        ring_info.NumAtomRings(i) > 0 and ring_info.NumAtomRings(j) > 0:
                    continue
                if int(distances[i, j]) + 1 not in self.allowed_ring_sizes:
                    continue
                for order in range(1, min(increase, 3) + 1):
                    new = Chem.RWMol(mol)
                    new.AddBond(i, j, _BOND_TYPES[order])
                    self._accept(new, products, rejected)
            else:
                current = int(bond.GetBondTypeAsDouble())
                for order in range(current + 1, min(current + increase, 3) + 1):
                    new = Chem.RWMol(mol)
                    new.GetBondBetweenAtoms(i, j).SetBondType(_BOND_TYPES[order])
                    self._accept(new, products, rejected)

        # Lower the order of a bond or remove it
        if self.allow_removal:
            for bond in bonds(mol):
                i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
                current = int(bond.GetBondTypeAsDouble())
                for order in range(current - 1, -1, -1):
                    new = Chem.RWMol(mol)
                    if order > 0:
                        new.GetBondBetweenAtoms(i, j).SetBondType(_BOND_TYPES[order])
                    else:
                        new.RemoveBond(i, j)
                        new = self._largest_fragment(new)
                    self._accept(new, products, rejected)
        return products

    @staticmethod
    def _largest_fragment(mol: Chem.RWMol) -> Chem.RWMol:
        """Keep the largest connected piece (ties: the one holding the lowest atom index)"""
        frags = Chem.GetMolFrags(mol)
        if len(frags) <= 1:
            return mol
        keep = set(max(frags, key=len))
        for idx in sorted((a for a in range(mol.GetNumAtoms()) if a not in keep), reverse=True):
            mol.RemoveAtom(idx)
        return mol

    def _accept(self, new: Chem.RWMol, products: Dict[str, Chem.Mol], rejected: Set[str]) -> None:
        """Sanitise a product and store it if it is new and valid

        Edits of symmetric atoms often give the same molecule: the canonical SMILES is computed first,
        and the search-space checks run once per distinct product (``rejected`` remembers the failures).
        """
        try:
            Chem.SanitizeMol(new)
        except (ValueError, RuntimeError):
            return
        key = canonicalize(new)
        if not key or key in products or key in rejected:
            return
        try:
            check_mol(new, self.max_heavy_atoms)
        except (InvalidMoleculeError, RuntimeError):
            rejected.add(key)
            return
        if not self.allow_strained and _is_strained(new):
            rejected.add(key)
            return
        products[key] = new
