"""Group-contribution features: counts of atom-centred groups in a molecule.

A group is one heavy atom's type -- element (lower case if aromatic) and total degree
(bonded neighbours, hydrogens included) -- followed by the sorted list of its bonds to heavy
neighbours, each written as the bond symbol and the neighbour's type. Examples::

    ethane CC      -> 2 x 'C4(-C4)'
    ethanol CCO    -> 'C4(-C4)', 'C4(-C4,-O2)', 'O2(-C4)'
    benzene        -> 6 x 'c3(:c3,:c3)'

Groups not seen during ``fit`` are counted in an explicit ``other`` feature. Optionally (on by
default) the featurizer also counts the bare atom types (``atom:C4``, ...), a coarser level that
keeps an estimate for molecules whose groups were never seen in training, and the rings by size
(``ring:3`` ... ``ring:8``, the last for 8 and more): atom-centred groups cannot see ring strain
(cyclobutane's CH2 groups look like butane's), which is worth tens of kcal/mol for small rings.
"""
from __future__ import annotations

import functools
import logging
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from rdkit import Chem
from sklearn.base import BaseEstimator, TransformerMixin

from moldesign.chem import InvalidMoleculeError, atoms, bonds, parse_smiles

logger = logging.getLogger(__name__)

OTHER = 'other'
"""Name of the feature that counts groups outside the vocabulary"""
RING_LABELS = tuple(f'ring:{n}' for n in range(3, 9))
"""Ring-size features (always in the vocabulary, whether or not training saw them)"""

_BOND_SYMBOLS = {
    Chem.BondType.SINGLE: '-',
    Chem.BondType.DOUBLE: '=',
    Chem.BondType.TRIPLE: '#',
    Chem.BondType.AROMATIC: ':',
}


def atom_type(atom: Chem.Atom) -> str:
    """Type of an atom: element (lower case if aromatic) and total degree, hydrogens included

    Args:
        atom: Atom of a sanitised molecule
    Returns:
        Type label, e.g. ``C4`` for an sp3 carbon, ``c3`` for an aromatic CH
    """
    symbol = atom.GetSymbol()
    if atom.GetIsAromatic():
        symbol = symbol.lower()
    return f'{symbol}{atom.GetTotalDegree()}'


def count_groups(mol: Chem.Mol) -> Counter:
    """Count the atom-centred groups of a molecule

    Args:
        mol: Sanitised RDKit molecule, hydrogens implicit
    Returns:
        Map of group label to count
    """
    types = [atom_type(a) for a in atoms(mol)]
    neighbours: List[List[str]] = [[] for _ in types]
    for bond in bonds(mol):
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        symbol = _BOND_SYMBOLS.get(bond.GetBondType(), '~')
        neighbours[i].append(symbol + types[j])
        neighbours[j].append(symbol + types[i])
    return Counter(f'{t}({",".join(sorted(n))})' for t, n in zip(types, neighbours))


@functools.lru_cache(maxsize=65536)
def _cached_counts(smiles: str, atom_types: bool, ring_sizes: bool) -> Tuple[Tuple[str, int], ...]:
    """Group counts of a molecule, cached: the thinker re-scores the same candidate pool after every QC result"""
    mol = _to_mol(smiles)
    counts = count_groups(mol)
    if atom_types:
        counts.update('atom:' + atom_type(a) for a in atoms(mol))
    if ring_sizes:
        counts.update(RING_LABELS[min(len(ring), 8) - 3] for ring in mol.GetRingInfo().AtomRings())
    return tuple(counts.items())


def _to_mol(smiles: str) -> Chem.Mol:
    try:
        return parse_smiles(smiles)
    except InvalidMoleculeError:
        raise
    except Exception as exc:  # e.g. a non-string
        raise InvalidMoleculeError(f'Invalid SMILES {smiles!r}: {exc}') from None


class GroupCountFeaturizer(BaseEstimator, TransformerMixin):
    """Count atom-centred groups (see the module docstring) in molecules given as SMILES

    Args:
        atom_types: Also count bare atom types (``atom:<type>``), a fallback level for unseen groups
        ring_sizes: Also count rings by size (``ring:3`` ... ``ring:8``), the strain that groups miss
        min_count: Groups seen in fewer training molecules than this go to ``other``

    Attributes:
        vocabulary_: Map of group label to column index, learned by ``fit``
    """

    def __init__(self, atom_types: bool = True, ring_sizes: bool = True, min_count: int = 1):
        self.atom_types = atom_types
        self.ring_sizes = ring_sizes
        self.min_count = min_count

    def _count(self, smiles: str) -> Counter:
        if not isinstance(smiles, str):
            raise InvalidMoleculeError(f'Invalid SMILES {smiles!r}: not a string')
        return Counter(dict(_cached_counts(smiles, bool(self.atom_types), bool(self.ring_sizes))))

    def fit(self, X: Sequence[str], y: Optional[Iterable] = None) -> 'GroupCountFeaturizer':
        """Learn the vocabulary of groups

        Args:
            X: SMILES strings
            y: Ignored
        Returns:
            self
        """
        seen: Counter = Counter()
        for smiles in X:
            seen.update(set(self._count(smiles)))
        labels = {g for g, c in seen.items() if c >= self.min_count or g.startswith('atom:')}
        if self.ring_sizes:
            labels.update(RING_LABELS)
        labels = sorted(labels)
        self.vocabulary_: Dict[str, int] = {g: i for i, g in enumerate(labels)}
        self.vocabulary_[OTHER] = len(labels)
        return self

    def transform(self, X: Sequence[str]) -> np.ndarray:
        """Count the groups of each molecule

        Args:
            X: SMILES strings
        Returns:
            Array (n_molecules, n_features) of counts; groups outside the vocabulary add to ``other``
        """
        if not hasattr(self, 'vocabulary_'):
            raise ValueError('GroupCountFeaturizer is not fitted: call fit first')
        if isinstance(X, str):
            raise ValueError('Expected a list of SMILES strings, got a single string')
        vocab = self.vocabulary_
        other = vocab[OTHER]
        output = np.zeros((len(X), len(vocab)))
        for row, smiles in enumerate(X):
            for group, count in self._count(smiles).items():
                output[row, vocab.get(group, other)] += count
        return output

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the features, in column order"""
        if not hasattr(self, 'vocabulary_'):
            raise ValueError('GroupCountFeaturizer is not fitted: call fit first')
        return np.array(sorted(self.vocabulary_, key=self.vocabulary_.get), dtype=object)
