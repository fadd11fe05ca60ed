"""Tests of the QM9 table (moldesign.qm9), built from the qm9pack CSV files"""
import os

import numpy as np
import pandas as pd
import pytest

from moldesign import qm9
from moldesign.chem import InvalidMoleculeError, canonicalize, is_valid, parse_smiles
from moldesign.simulate.embed import from_xyz

COLUMNS = ['smiles', 'qm9_index', 'n_heavy_atoms', 'n_atoms', 'u0', 'atomization_energy',
           'atomization_energy_per_atom', 'xyz']


@pytest.fixture(scope='module')
def table():
    return qm9.load_qm9()


def test_table(table):
    assert len(table) == qm9.QM9_SIZE == 130_831
    assert set(COLUMNS) <= set(table.columns)
    assert table['qm9_index'].is_unique
    assert table['n_heavy_atoms'].between(1, 9).all()
    assert (table['atomization_energy'] < 0).all()
    assert np.allclose(table['atomization_energy_per_atom'] * table['n_atoms'], table['atomization_energy'])
    # A few zwitterions of QM9 break our neutral-atoms rule; they are kept but flagged
    assert 0 < (~table['in_search_space']).sum() < 1000


def test_methane(table):
    row = table.set_index('qm9_index').loc[1]
    assert (row.smiles, row.n_atoms, row.n_heavy_atoms, row.formula) == ('C', 5, 1, 'CH4')
    assert row.u0 == pytest.approx(-40.47893)
    # (U0 - sum of QM9's atom references) in kcal/mol
    expected = (-40.47893 - (-37.846772 + 4 * -0.500273)) * 627.5095
    assert expected == pytest.approx(-396.0, abs=0.1)
    assert row.atomization_energy == pytest.approx(expected, abs=1e-3)
    assert qm9.qm9_atomization_energy('C') == pytest.approx(expected, abs=1e-3)
    # Electronic (what a QC code computes at a fixed geometry): U0 minus the zero-point energy
    assert row.zpve == pytest.approx(0.044749, abs=1e-6)
    assert row.electronic_atomization_energy == pytest.approx(expected - 0.044749 * 627.5095, abs=1e-3)
    assert row.electronic_atomization_energy_per_atom * 5 == pytest.approx(row.electronic_atomization_energy)
    symbols, coords = from_xyz(row.xyz)
    assert symbols == ['C', 'H', 'H', 'H', 'H']
    assert np.allclose(np.linalg.norm(coords[1:] - coords[0], axis=1), 1.0919, atol=2e-3)


def test_keys_are_canonical(table):
    rows = table.sample(300, random_state=0)
    for smiles, in_space in zip(rows['smiles'], rows['in_search_space']):
        assert canonicalize(parse_smiles(smiles)) == smiles
        assert is_valid(smiles) == in_space


def test_sampling_is_seeded():
    a = qm9.sample_molecules(20, seed=1)
    b = qm9.sample_molecules(20, seed=1)
    c = qm9.sample_molecules(20, seed=2)
    assert len(a) == 20 and set(COLUMNS) <= set(a.columns)
    assert a['smiles'].tolist() == b['smiles'].tolist()
    assert a['smiles'].tolist() != c['smiles'].tolist()
    assert a['in_search_space'].all()
    assert a['qm9_index'].is_unique
    assert len(qm9.sample_molecules(0, seed=1)) == 0
    for bad in (-1, 10 ** 6, 2.5):
        with pytest.raises(ValueError, match='Cannot draw'):
            qm9.sample_molecules(bad, seed=1)


def test_lookup():
    assert qm9.qm9_atomization_energy('OCC') == qm9.qm9_atomization_energy('CCO')
    assert qm9.qm9_atomization_energy('OCC') == pytest.approx(-761.15, abs=0.1)
    assert qm9.qm9_atomization_energy('CCCCCCCCCC') is None  # 10 heavy atoms: not in QM9
    with pytest.raises(InvalidMoleculeError):
        qm9.qm9_atomization_energy('C1CC')


def test_cache_built_atomically_and_invalidated(tmp_path, monkeypatch):
    data = tmp_path / 'data'
    data.mkdir()
    source = qm9.qm9_data_dir() / 'qm9_part1.csv'
    rows = pd.read_csv(source, nrows=30)
    rows.loc[5, 'SMILES'] = 'C1CC'  # does not parse: dropped
    rows.to_csv(data / 'qm9_part1.csv', index=False)
    cache = tmp_path / 'cache'
    monkeypatch.setattr(qm9, 'qm9_data_dir', lambda: data)
    monkeypatch.setenv('MOLDESIGN_CACHE_DIR', str(cache))

    first = qm9.load_qm9()
    assert len(first) == 29
    assert 6 not in first['qm9_index'].tolist()
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith('qm9-') and files[0].endswith('.pkl')

    # Changing the source rebuilds the cache and removes the old one
    rows.iloc[:10].to_csv(data / 'qm9_part1.csv', index=False)
    stat = (data / 'qm9_part1.csv').stat()
    os.utime(data / 'qm9_part1.csv', ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    second = qm9.load_qm9()
    assert len(second) == 9
    new_files = sorted(p.name for p in cache.iterdir())
    assert len(new_files) == 1 and new_files != files

    # A corrupt cache file is rebuilt
    qm9._load_cached.cache_clear()
    (cache / new_files[0]).write_bytes(b'not a pickle')
    assert len(qm9.load_qm9()) == 9
    qm9._load_cached.cache_clear()
