"""psi4 and NWChem back ends: real runs checked against PySCF (same geometry, same method and basis)"""
import shutil

import numpy as np
import pytest
import qcelemental as qcel

from moldesign.simulate.base import QCFailure, get_backend, get_spec

PROGRAMS = [
    pytest.param('psi4', marks=pytest.mark.skipif(shutil.which('psi4') is None, reason='psi4 not on PATH')),
    pytest.param('nwchem', marks=pytest.mark.skipif(shutil.which('nwchem') is None, reason='nwchem not on PATH')),
]

WATER_XYZ = """
O 0.0 0.0 0.117
H 0.0 0.757 -0.469
H 0.0 -0.757 -0.469
"""


def _water() -> qcel.models.Molecule:
    return qcel.models.Molecule.from_data(WATER_XYZ, fix_com=True, fix_orientation=True)


def _pyscf_energy(molecule: qcel.models.Molecule) -> float:
    """HF/STO-3G energy with plain PySCF (conventional integrals, RHF or UHF)"""
    from pyscf import gto, scf
    spin = int(molecule.molecular_multiplicity) - 1
    mol = gto.M(atom=[(s, tuple(xyz)) for s, xyz in zip(molecule.symbols, np.asarray(molecule.geometry))],
                unit='Bohr', basis='sto-3g', spin=spin, verbose=0)
    mf = scf.UHF(mol) if spin else scf.RHF(mol)
    mf.conv_tol = 1e-10
    return float(mf.kernel())


def _oh_lengths(molecule: qcel.models.Molecule) -> np.ndarray:
    geom = np.asarray(molecule.geometry).reshape(-1, 3) * qcel.constants.bohr2angstroms
    return np.linalg.norm(geom[1:] - geom[0], axis=1)


@pytest.mark.parametrize('program', PROGRAMS)
@pytest.mark.parametrize('element', ['H', 'C', 'O'])
def test_atom_energy_matches_pyscf(program, element):
    atom = qcel.models.Molecule(symbols=[element], geometry=[0.0, 0.0, 0.0],
                                molecular_multiplicity={'H': 2, 'C': 3, 'O': 3}[element])
    result = get_backend(program).compute_energy(atom, get_spec(f'{program}/hf/sto-3g'), relax=True)
    assert result.n_steps == 0  # single atoms are not relaxed
    assert result.energy == pytest.approx(_pyscf_energy(atom), abs=1e-5)


@pytest.mark.parametrize('program', PROGRAMS)
def test_water_energy_matches_pyscf(program):
    water = _water()
    result = get_backend(program).compute_energy(water, get_spec(f'{program}/hf/sto-3g'), relax=False)
    assert result.n_steps == 0
    assert result.energy == pytest.approx(_pyscf_energy(water), abs=1e-5)
    assert list(result.molecule.symbols) == ['O', 'H', 'H']
    assert np.allclose(np.asarray(result.molecule.geometry), np.asarray(water.geometry), atol=1e-6)
    assert result.program_version


@pytest.mark.parametrize('program', PROGRAMS)
def test_water_relaxation(program):
    water = _water()
    spec = get_spec(f'{program}/hf/sto-3g')
    result = get_backend(program).compute_energy(water, spec, relax=True)
    assert result.n_steps > 0
    assert list(result.molecule.symbols) == ['O', 'H', 'H']
    lengths = _oh_lengths(result.molecule)
    assert np.all((lengths > 0.95) & (lengths < 1.00)), lengths
    assert lengths == pytest.approx([0.989, 0.989], abs=2e-3)
    # The energy is that of the final geometry, and lower than the starting one
    assert result.energy == pytest.approx(_pyscf_energy(result.molecule), abs=1e-5)
    assert result.energy < _pyscf_energy(water) - 1e-3


@pytest.mark.skipif(shutil.which('nwchem') is None, reason='nwchem not on PATH')
def test_nwchem_geometric_relaxation():
    result = get_backend('nwchem').compute_energy(_water(), get_spec('nwchem/hf/sto-3g', optimizer='geometric'),
                                                  relax=True)
    assert result.n_steps > 0
    assert _oh_lengths(result.molecule) == pytest.approx([0.989, 0.989], abs=2e-3)


@pytest.mark.parametrize('program', PROGRAMS)
def test_unknown_method_fails_clearly(program):
    with pytest.raises(QCFailure, match='nonsense') as info:
        get_backend(program).compute_energy(_water(), get_spec(f'{program}/nonsense/sto-3g'), relax=False)
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('program', PROGRAMS)
def test_unknown_basis_fails_clearly(program):
    with pytest.raises(QCFailure, match='(?i)basis') as info:
        get_backend(program).compute_energy(_water(), get_spec(f'{program}/hf/nonsense-basis'), relax=False)
    assert '\n' not in str(info.value)


@pytest.mark.timeout(120)  # the point: the time limit ends the run instead of letting it hang
@pytest.mark.parametrize('program', PROGRAMS)
def test_timeout_kills_the_run(program):
    with pytest.raises(QCFailure, match='time limit'):
        get_backend(program).compute_energy(_water(), get_spec(f'{program}/hf/sto-3g', timeout=0.05), relax=True)


@pytest.mark.parametrize('program', ['psi4', 'nwchem'])
def test_missing_program_fails_clearly(program, monkeypatch):
    monkeypatch.setenv('PATH', '/nonexistent')
    with pytest.raises(QCFailure, match=f'{program} not found on PATH: install it'):
        get_backend(program).compute_energy(_water(), get_spec(f'{program}/hf/sto-3g'), relax=False)


@pytest.mark.parametrize('program', PROGRAMS)
def test_unconverged_relaxation_fails_clearly(program):
    with pytest.raises(QCFailure, match='(?i)converge') as info:
        get_backend(program).compute_energy(_water(), get_spec(f'{program}/hf/sto-3g', max_steps=1), relax=True)
    assert '\n' not in str(info.value)
