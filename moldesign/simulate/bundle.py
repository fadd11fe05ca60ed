"""Several molecules in one QC task: for fast methods, where a task's round trip would rival its computation.

A bundle task computes its molecules one after the other on one worker and returns, for each, its record or the
one-line reason it failed, so one bad molecule does not fail the others.
"""
from __future__ import annotations

import logging
from typing import List, Mapping, Sequence, Union

from moldesign.chem import InvalidMoleculeError
from moldesign.simulate.atomization import AtomizationRecord, compute_atomization_energy
from moldesign.simulate.base import QCFailure, QCSpec

logger = logging.getLogger(__name__)


def compute_atomization_energies(smiles: Sequence[str], spec: QCSpec, reference_energies: Mapping[str, float]
                                 ) -> List[Union[AtomizationRecord, str]]:
    """Relax several molecules and compute their atomization energies, one after the other

    Args:
        smiles: Molecules (SMILES of the search space)
        spec: QC specification
        reference_energies: Energy (Hartree) of each isolated atom with the same specification
    Returns:
        For each molecule, in order: its record, or why it failed (``"<ExceptionType>: <message>"``)
    """
    out: List[Union[AtomizationRecord, str]] = []
    for molecule in smiles:
        try:
            out.append(compute_atomization_energy(molecule, spec, reference_energies))
        except (QCFailure, InvalidMoleculeError, ValueError) as exc:
            out.append(f'{type(exc).__name__}: {exc}')
    return out
