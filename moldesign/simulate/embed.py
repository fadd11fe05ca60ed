"""3D structures of molecules from their SMILES: RDKit ETKDG conformers, best by MMFF energy.

A single ETKDG conformer sometimes embeds a strained isomer (e.g. ``C1C2OCC=CC12`` 38 kcal/mol
above its best conformer), so several seeded conformers are embedded, each relaxed with MMFF94,
and the one of lowest MMFF energy is kept.

XYZ text (records, QM9 geometries, starting geometries) is written and read with ASE's plain XYZ
format (:func:`to_xyz`, :func:`from_xyz`, :func:`qcel_to_xyz`): Angstrom, 8 decimals, the geometry
kept in its frame (no recentering or reorientation).
"""
from __future__ import annotations

import functools
import io
import logging
from typing import Any, List, Optional, Tuple

import ase.io
import numpy as np
import qcelemental as qcel
from ase import Atoms
from rdkit import Chem
from rdkit.Chem import AllChem
from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers, StereoEnumerationOptions

from moldesign.chem import parse_smiles
from moldesign.simulate.base import QCFailure

logger = logging.getLogger(__name__)

N_CONFORMERS = 10
"""Default number of ETKDG conformers embedded per molecule"""
MAX_STEREOISOMERS = 16
"""Stereoisomers tried, one after the other, when the stereo-free molecule does not embed"""
XYZ_FORMAT = '%14.8f'
"""Number format of the coordinates of the XYZ texts written here (Angstrom)"""


def generate_conformer(smiles: str, n_conformers: int = N_CONFORMERS, seed: int = 1,
                       mmff_steps: int = 500) -> Tuple[List[str], np.ndarray]:
    """Embed a molecule in 3D and keep its lowest-energy (MMFF94) conformer

    Args:
        smiles: SMILES string
        n_conformers: Number of ETKDG conformers to embed
        seed: Random seed of the embedding (same seed, same geometry)
        mmff_steps: Largest number of MMFF relaxation steps per conformer
    Returns:
        - Element symbols, hydrogens included
        - Coordinates (Angstrom), shape (n_atoms, 3)
    Raises:
        QCFailure: if RDKit cannot embed the molecule in 3D
    """
    parsed = parse_smiles(smiles)
    mol = Chem.AddHs(parsed)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.numThreads = 1
    conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_conformers, params=params))
    if not conf_ids:  # Random starting coordinates help some cages and small rings
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) >= 0:  # One attempt first: failures are slow
            conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_conformers, params=params))
    if not conf_ids:
        # Cages: our keys carry no stereo and RDKit may pick impossible ring-fusion stereo; try each stereoisomer
        options = StereoEnumerationOptions(unique=True, maxIsomers=MAX_STEREOISOMERS)
        for isomer in EnumerateStereoisomers(parsed, options=options):
            mol = Chem.AddHs(isomer)
            if AllChem.EmbedMolecule(mol, params) < 0:  # One attempt first: failures are slow
                continue
            conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_conformers, params=params))
            if conf_ids:
                logger.debug(f'{smiles}: embedded as stereoisomer {Chem.MolToSmiles(isomer)}')
                break
    if not conf_ids:
        raise QCFailure(f'{smiles}: RDKit could not embed the molecule in 3D')

    # Relax each conformer with MMFF (UFF if MMFF has no parameters) and keep the lowest energy
    if AllChem.MMFFHasAllMoleculeParams(mol):
        results = AllChem.MMFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=mmff_steps)
    else:
        results = AllChem.UFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=mmff_steps)
    energies = [e for _, e in results]
    best = conf_ids[int(np.argmin(energies))]
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    coords = np.array(mol.GetConformer(best).GetPositions(), dtype=float)
    return symbols, coords


def to_xyz(symbols: List[str], coords: np.ndarray, comment: str = '') -> str:
    """Write a geometry as the text of an XYZ file (ASE's plain XYZ writer, 8 decimals, in its frame)

    Args:
        symbols: Element symbols
        coords: Coordinates (Angstrom)
        comment: Text of the comment (second) line (line breaks become spaces)
    Returns:
        XYZ-file text
    """
    buffer = io.StringIO()
    atoms = Atoms(symbols=list(symbols), positions=np.asarray(coords, dtype=float).reshape(-1, 3))
    ase.io.write(buffer, atoms, format='xyz', comment=' '.join(comment.splitlines()), fmt=XYZ_FORMAT)
    return buffer.getvalue()


def from_xyz(xyz: str) -> Tuple[List[str], np.ndarray]:
    """Read the text of an XYZ file (ASE's plain XYZ reader; the geometry stays in its frame)

    Args:
        xyz: XYZ-file text; lines after the first geometry are ignored
    Returns:
        - Element symbols
        - Coordinates (Angstrom)
    Raises:
        ValueError: if the text is not an XYZ geometry
    """
    lines = xyz.strip('\n').splitlines()
    try:
        n_atoms = int(lines[0])
        atoms = ase.io.read(io.StringIO('\n'.join(lines[:n_atoms + 2]) + '\n'), format='xyz')
    except (IndexError, ValueError) as exc:
        raise ValueError(f'Not an XYZ geometry: {exc}') from None
    return list(atoms.get_chemical_symbols()), atoms.get_positions()


FAST_CHECK_ITERATIONS = 20
"""Embedding attempts per strategy in :func:`can_embed`: a tenth of RDKit's default; failures then take ~1-2 s
instead of 5-45 s, and 142 of 150 random polycyclic QM9 molecules still embed (144 with the default)"""


def _quick_params(seed: int) -> AllChem.EmbedParameters:
    """ETKDG parameters of the quick checks: :data:`FAST_CHECK_ITERATIONS` attempts, one thread"""
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.numThreads = 1
    params.maxIterations = FAST_CHECK_ITERATIONS
    return params


def _embed_quickly(mol: Chem.Mol, params: AllChem.EmbedParameters) -> bool:
    """Embed one conformer: ETKDG, then from random starting coordinates (``params`` keeps them switched on)"""
    if AllChem.EmbedMolecule(mol, params) >= 0:
        return True
    params.useRandomCoords = True
    return AllChem.EmbedMolecule(mol, params) >= 0


def can_embed(smiles: str, seed: int = 1) -> bool:
    """Whether RDKit embeds a molecule in 3D, tried quickly (for screening candidates before QC)

    The same strategies as :func:`generate_conformer` (ETKDG, random starting coordinates, each stereoisomer),
    with :data:`FAST_CHECK_ITERATIONS` attempts each and one conformer.

    Args:
        smiles: SMILES string
        seed: Random seed of the embedding
    Returns:
        Whether an embedding was found
    """
    parsed = parse_smiles(smiles)
    params = _quick_params(seed)
    if _embed_quickly(Chem.AddHs(parsed), params):
        return True
    options = StereoEnumerationOptions(unique=True, maxIsomers=MAX_STEREOISOMERS)
    return any(AllChem.EmbedMolecule(Chem.AddHs(isomer), params) >= 0
               for isomer in EnumerateStereoisomers(parsed, options=options))


@functools.lru_cache(maxsize=65536)
def strain_energy(smiles: str, seed: int = 1) -> Optional[float]:
    """Bonded MMFF94 energy (bond stretch, angle bend, stretch-bend) per heavy atom of one relaxed ETKDG conformer
    (kcal/mol), a cheap measure of strain

    Only the bonded terms: the non-bonded ones (electrostatics, van der Waals) and torsions say more about a
    molecule's polarity than about its strain (the whole MMFF94 energy per heavy atom ranges from -7 to 14 among
    unstrained and strained molecules alike). Strained polycyclic cages that the search method cannot relax
    without breaking bonds score high (in per-atom GFN2-xTB searches the failures' median is 5.9, the successes'
    2.6; QM9's median is 0.6, its 99th percentile 6.6): the screening learns the limit from the campaign's own
    failures (:class:`~moldesign.score.feasibility.StrainModel`). About 16 ms per QM9-sized molecule; cached.

    Args:
        smiles: SMILES string
        seed: Random seed of the embedding
    Returns:
        The energy, or None if the molecule cannot be embedded quickly or MMFF94 has no parameters for it
    """
    relaxed = mmff_relaxed(smiles, seed)
    if relaxed is None:
        return None
    mol, properties, _ = relaxed
    for term in ('Oop', 'Torsion', 'VdW', 'Ele'):  # The bonded terms at the relaxed geometry: stretch and bend
        getattr(properties, f'SetMMFF{term}Term')(False)
    return float(AllChem.MMFFGetMoleculeForceField(mol, properties).CalcEnergy()) / mol.GetNumHeavyAtoms()


def mmff_relaxed(smiles: str, seed: int = 1) -> Optional[Tuple[Chem.Mol, Any, float]]:
    """One quickly embedded ETKDG conformer relaxed with MMFF94 (what :func:`strain_energy` measures)

    Args:
        smiles: SMILES string
        seed: Random seed of the embedding
    Returns:
        The molecule (hydrogens added, relaxed conformer), its MMFF94 properties and its whole MMFF94 energy
        (kcal/mol); None if the molecule cannot be embedded quickly or MMFF94 has no parameters for it
    """
    try:
        mol = Chem.AddHs(parse_smiles(smiles))
    except Exception:
        return None
    if not _embed_quickly(mol, _quick_params(seed)):
        return None
    properties = AllChem.MMFFGetMoleculeProperties(mol)
    if properties is None:
        return None
    field = AllChem.MMFFGetMoleculeForceField(mol, properties)
    field.Minimize(maxIts=500)
    return mol, properties, float(field.CalcEnergy())


def to_qcel(symbols: List[str], coords: np.ndarray, multiplicity: int = 1) -> qcel.models.Molecule:
    """Make a neutral QCSchema molecule from symbols and coordinates

    Args:
        symbols: Element symbols
        coords: Coordinates (Angstrom)
        multiplicity: Spin multiplicity
    Returns:
        Molecule (geometry in Bohr, as QCSchema requires)
    """
    geometry = np.asarray(coords, dtype=float).reshape(-1, 3) / qcel.constants.bohr2angstroms
    return qcel.models.Molecule(symbols=list(symbols), geometry=geometry, molecular_charge=0,
                                molecular_multiplicity=multiplicity, fix_com=True, fix_orientation=True,
                                fix_symmetry='c1')


def qcel_to_xyz(molecule: qcel.models.Molecule, comment: str = '') -> str:
    """Write a QCSchema molecule as XYZ-file text

    Args:
        molecule: Molecule (geometry in Bohr, as QCSchema requires)
        comment: Text of the comment line
    Returns:
        XYZ-file text (Angstrom), atoms in the molecule's order and frame
    """
    return to_xyz(list(molecule.symbols), np.asarray(molecule.geometry) * qcel.constants.bohr2angstroms, comment)


def smiles_to_molecule(smiles: str, n_conformers: int = N_CONFORMERS, seed: int = 1) -> qcel.models.Molecule:
    """Generate a 3D QCSchema molecule (lowest-MMFF-energy ETKDG conformer) from a SMILES string

    Args:
        smiles: SMILES string
        n_conformers: Number of ETKDG conformers to embed
        seed: Random seed of the embedding
    Returns:
        Neutral singlet molecule
    Raises:
        QCFailure: if RDKit cannot embed the molecule in 3D
    """
    symbols, coords = generate_conformer(smiles, n_conformers, seed)
    return to_qcel(symbols, coords)



def _skeleton(mol: Chem.Mol) -> Chem.Mol:
    """A molecule's bare graph: elements and connections only (all bonds single, no charges, no implicit H)"""
    skeleton = Chem.RWMol()
    for atom in mol.GetAtoms():
        new = Chem.Atom(atom.GetAtomicNum())
        new.SetNoImplicit(True)
        skeleton.AddAtom(new)
    for bond in mol.GetBonds():
        skeleton.AddBond(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), Chem.BondType.SINGLE)
    skeleton = skeleton.GetMol()
    skeleton.UpdatePropertyCache(strict=False)
    return skeleton


def bonds_preserved(smiles: str, xyz: str) -> bool:
    """Whether every bond of a molecule is still present in a geometry (no dissociation, no migration)

    Bonds of the geometry are atom pairs closer than 1.3 times the sum of covalent radii (RDKit's
    ``DetermineConnectivity``). Extra short contacts are allowed: strained cages (e.g. the bridgeheads of
    bicyclo[1.1.0]butanes) have non-bonded atoms that close even in QM9's own geometries.

    Args:
        smiles: SMILES string of the molecule
        xyz: Geometry, XYZ-file text (Angstrom), atoms in any order
    Returns:
        Whether the geometry's graph contains the molecule's graph (same atoms)
    """
    from rdkit.Chem import rdDetermineBonds
    expected = _skeleton(Chem.AddHs(parse_smiles(smiles)))
    symbols, coords = from_xyz(xyz)
    found = Chem.MolFromXYZBlock(to_xyz(symbols, coords))
    if found is None or found.GetNumAtoms() != expected.GetNumAtoms():
        return False
    rdDetermineBonds.DetermineConnectivity(found)
    return _skeleton(found).HasSubstructMatch(expected)
