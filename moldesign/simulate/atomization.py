"""The QC tasks of a campaign: energies of isolated atoms and atomization energies of molecules.

Both task functions are pure and picklable (inputs in, results out) so they run on Parsl workers:

- :func:`compute_reference_energy`: total energy of an isolated atom (open shell, ground-state
  multiplicity from :data:`~moldesign.simulate.base.SPIN_MULTIPLICITY`)
- :func:`compute_atomization_energy`: relax a molecule and return an :class:`AtomizationRecord`,
  with the atomization energy E(molecule) - sum E(atoms) (negative; QM9's sign convention)

Every computation runs in a scratch temporary directory (QC programs write files in the working
directory), removed afterwards.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from typing import Iterator, Mapping, Optional

import numpy as np
import qcelemental as qcel
from pydantic import BaseModel, Field
from rdkit.Chem.rdMolDescriptors import CalcMolFormula

from moldesign.chem import ALLOWED_ELEMENTS, count_elements, parse_smiles, validate_smiles
from moldesign.simulate.base import SPIN_MULTIPLICITY, QCFailure, QCSpec, get_backend
from moldesign.simulate.embed import N_CONFORMERS, bonds_preserved, from_xyz, qcel_to_xyz, smiles_to_molecule, to_qcel

logger = logging.getLogger(__name__)

HARTREE_TO_KCAL_MOL = qcel.constants.conversion_factor("hartree", "kcal/mol")
"""kcal/mol per Hartree (qcelemental's CODATA value, 627.5095)"""

REFERENCE_HINTS = {
    'xtb': 'try --qc-keywords \'{"spin_polarization": 0}\'',
    'pyscf': 'try --qc-keywords \'{"max_cycle": 300}\' or \'{"density_fit": false}\'',
    'psi4': 'try --qc-keywords \'{"maxiter": 300, "damping_percentage": 50}\' or another program',
    'nwchem': 'try --qc-keywords \'{"scf__maxiter": 300}\' (HF) or \'{"dft__iterations": 300}\' (DFT)',
}
"""What to try when the energy of an isolated atom fails, per program (ends the one-line message)"""


class AtomizationRecord(BaseModel):
    """Result of :func:`compute_atomization_energy` for one molecule (JSON-serialisable)"""

    smiles: str = Field(..., description='Canonical SMILES (moldesign.chem.canonicalize)')
    formula: str = Field(..., description='Molecular formula, Hill order')
    n_atoms: int = Field(..., description='Number of atoms, hydrogens included')
    n_heavy_atoms: int = Field(..., description='Number of heavy (non-hydrogen) atoms')
    total_energy: float = Field(..., description='Total energy of the molecule (Hartree)')
    atomization_energy: float = Field(..., description='E(molecule) - sum E(atoms) (kcal/mol, negative)')
    atomization_energy_hartree: float = Field(..., description='E(molecule) - sum E(atoms) (Hartree)')
    atomization_energy_per_atom: float = Field(..., description='Atomization energy per atom, H included (kcal/mol)')
    xyz: str = Field(..., description='Relaxed geometry, XYZ-file text (Angstrom)')
    n_steps: int = Field(..., description='Number of geometry optimiser steps')
    qc_spec: str = Field(..., description='Name of the QC specification')
    program: str = Field(..., description='QC program')
    method: str = Field(..., description='QC method')
    basis: Optional[str] = Field(None, description='Basis set (None for xtb)')
    program_version: str = Field(..., description='Version of the QC program')
    walltime: float = Field(..., description='Wall time of the task (s)')


@contextlib.contextmanager
def scratch_directory() -> Iterator[str]:
    """Run the enclosed code in a new temporary working directory, removed afterwards

    Yields:
        Path of the scratch directory
    """
    cwd = os.getcwd()
    path = tempfile.mkdtemp(prefix='moldesign-qc-')
    try:
        os.chdir(path)
        yield path
    finally:
        os.chdir(cwd)
        shutil.rmtree(path, ignore_errors=True)


def _check_spec(spec: QCSpec) -> QCSpec:
    if isinstance(spec, str):
        raise TypeError('spec must be a QCSpec; build one with moldesign.simulate.get_spec(name)')
    if not isinstance(spec, QCSpec):  # e.g. a dict read back from qc_spec.json
        spec = QCSpec.model_validate(spec)
    return spec


def compute_reference_energy(element: str, spec: QCSpec) -> float:
    """Compute the total energy of an isolated atom (open shell, ground-state multiplicity)

    For a composite specification (``method//geometry-method``) the atom's energy is that of the
    main method: there is no geometry to relax.

    Args:
        element: Element symbol, one of the search space's (H, C, N, O, F)
        spec: QC specification
    Returns:
        Total energy (Hartree)
    Raises:
        ValueError: if the element is not one of the search space's
        QCFailure: if the computation fails (one line: the atom, the specification, the program's
            error and what to try)
    """
    spec = _check_spec(spec)
    if not isinstance(element, str) or element.strip().capitalize() not in ALLOWED_ELEMENTS:
        raise ValueError(f'{element!r} is not an allowed element (allowed: {", ".join(ALLOWED_ELEMENTS)})')
    element = element.strip().capitalize()
    atom = to_qcel([element], np.zeros((1, 3)), multiplicity=SPIN_MULTIPLICITY[element])
    backend = get_backend(spec.program)
    try:
        with scratch_directory():
            result = backend.compute_energy(atom, spec, relax=False)
    except QCFailure as exc:
        message = str(exc)
        if 'try ' not in message and spec.program in REFERENCE_HINTS:
            message += f'; {REFERENCE_HINTS[spec.program]}'
        raise QCFailure(f'Reference energy of the {element} atom (multiplicity {SPIN_MULTIPLICITY[element]}) '
                        f'with {spec.name} failed: {message}') from None
    logger.info(f'{element} atom with {spec.name}: {result.energy:.8f} Ha')
    return float(result.energy)


def compute_atomization_energy(smiles: str, spec: QCSpec, reference_energies: Mapping[str, float],
                               n_conformers: int = N_CONFORMERS, seed: int = 1,
                               xyz: Optional[str] = None) -> AtomizationRecord:
    """Relax a molecule and compute its atomization energy

    The starting geometry is the lowest-MMFF-energy conformer of several seeded RDKit ETKDG
    embeddings. A composite specification (``spec.geometry_spec`` set, e.g.
    ``pyscf/b3lyp/6-31g(2df,p)//xtb``) relaxes with the geometry specification first, then computes
    a single point with the main one.

    Args:
        smiles: SMILES string of a molecule of the search space
        spec: QC specification
        reference_energies: Energy (Hartree) of each isolated atom with the same specification,
            e.g. ``{"H": -0.4293, "C": -1.8386, ...}`` (from :func:`compute_reference_energy`)
        n_conformers: Number of ETKDG conformers embedded to pick the starting geometry
        seed: Random seed of the embedding
        xyz: Starting geometry (XYZ-file text, Angstrom, atoms in any order) instead of an RDKit embedding,
            e.g. QM9's geometry for cages RDKit cannot embed
    Returns:
        The record of the molecule
    Raises:
        moldesign.chem.InvalidMoleculeError: if the SMILES is invalid or outside the search space
        ValueError: if a reference energy is missing
        QCFailure: if there is no 3D embedding, the QC computation fails, or bonds of the molecule broke
            during the relaxation
    """
    start = time.perf_counter()
    smiles = validate_smiles(smiles)
    spec = _check_spec(spec)
    counts = count_elements(smiles)
    missing = sorted(set(counts) - set(reference_energies))
    if missing:
        raise ValueError(f'No reference energy for element(s) {", ".join(missing)} (spec {spec.name})')

    if xyz is None:
        molecule = smiles_to_molecule(smiles, n_conformers=n_conformers, seed=seed)
    else:
        symbols, coords = from_xyz(xyz)
        if Counter(symbols) != Counter(counts):
            raise ValueError(f'{smiles}: the starting geometry has atoms {dict(Counter(symbols))}, '
                             f'the molecule {counts}')
        molecule = to_qcel(symbols, coords)
    with scratch_directory():
        if spec.geometry_spec is not None:
            geometry_spec = spec.geometry_spec
            relaxed = get_backend(geometry_spec.program).compute_energy(molecule, geometry_spec, relax=True)
            result = get_backend(spec.program).compute_energy(relaxed.molecule, spec, relax=False)
            n_steps = relaxed.n_steps
        else:
            result = get_backend(spec.program).compute_energy(molecule, spec, relax=spec.relax)
            n_steps = result.n_steps
    if not np.isfinite(result.energy):
        raise QCFailure(f'{smiles}: {spec.name} returned a non-finite energy')
    xyz_out = qcel_to_xyz(result.molecule, comment=smiles)
    if not bonds_preserved(smiles, xyz_out):
        raise QCFailure(f'{smiles}: bonds broke during the {spec.name} relaxation '
                        '(not a stable molecule with this method)')

    reference = sum(n * float(reference_energies[e]) for e, n in counts.items())
    atomization_hartree = float(result.energy) - reference
    atomization = atomization_hartree * HARTREE_TO_KCAL_MOL
    n_atoms = sum(counts.values())
    return AtomizationRecord(
        smiles=smiles,
        formula=CalcMolFormula(parse_smiles(smiles)),
        n_atoms=n_atoms,
        n_heavy_atoms=n_atoms - counts.get('H', 0),
        total_energy=float(result.energy),
        atomization_energy=atomization,
        atomization_energy_hartree=atomization_hartree,
        atomization_energy_per_atom=atomization / n_atoms,
        xyz=xyz_out,
        n_steps=int(n_steps),
        qc_spec=spec.name,
        program=spec.program,
        method=spec.method,
        basis=spec.basis,
        program_version=result.program_version,
        walltime=time.perf_counter() - start,
    )
