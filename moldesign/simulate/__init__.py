"""Quantum chemistry tasks: atomization energies of molecules with several QC programs.

The task functions (:func:`compute_reference_energy`, :func:`compute_atomization_energy`) are
pure and picklable: they run on Parsl workers. Example::

    from moldesign.simulate import get_spec, compute_reference_energy, compute_atomization_energy
    spec = get_spec('xtb')
    refs = {e: compute_reference_energy(e, spec) for e in ('H', 'C', 'O')}
    record = compute_atomization_energy('CCO', spec, refs)
    record.atomization_energy  # kcal/mol, negative
"""
from moldesign.simulate.atomization import (HARTREE_TO_KCAL_MOL, AtomizationRecord, compute_atomization_energy,
                                            compute_reference_energy)
from moldesign.simulate.base import SPIN_MULTIPLICITY, BackendResult, QCFailure, QCSpec, get_backend, get_spec

__all__ = ['get_spec', 'QCSpec', 'QCFailure', 'AtomizationRecord', 'BackendResult', 'SPIN_MULTIPLICITY',
           'HARTREE_TO_KCAL_MOL', 'compute_reference_energy', 'compute_atomization_energy', 'get_backend']
