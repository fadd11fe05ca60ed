"""Tests of the search-space rules and the molecule key (moldesign.chem)"""
import pytest

from moldesign.chem import (InvalidMoleculeError, canonicalize, check_mol, count_atoms,
                            count_elements, is_valid, parse_smiles, validate_smiles)


@pytest.mark.parametrize('smiles,expected', [('OCC', 'CCO'), ('C(C)O', 'CCO'), ('c1ccccc1', 'c1ccccc1'),
                                             ('C1=CC=CC=C1', 'c1ccccc1'), ('[CH4]', 'C'), ('F/C=C/F', 'FC=CF'),
                                             ('N[C@@H](C)C(=O)O', 'CC(N)C(=O)O')])
def test_validate_canonical(smiles, expected):
    assert validate_smiles(smiles) == expected
    assert is_valid(smiles)


def test_canonical_key_is_stereo_free_and_unique():
    assert canonicalize(parse_smiles('F/C=C/F')) == canonicalize(parse_smiles('F/C=C\\F'))
    assert canonicalize(parse_smiles('C[C@H](N)O')) == canonicalize(parse_smiles('C[C@@H](N)O'))
    assert validate_smiles('CCO') != validate_smiles('COC')


@pytest.mark.parametrize('smiles,words', [
    ('C1CC', 'cannot parse'),                     # unclosed ring
    ('C(C)(C)(C)(C)C', 'cannot parse'),           # pentavalent carbon fails sanitisation
    ('not a smiles', 'cannot parse'),
    ('', 'empty'),
    ('CCS', 'S is not an allowed element'),
    ('CCl', 'Cl is not an allowed element'),
    ('[Si]', 'Si is not an allowed element'),
    ('[H][H]', 'no heavy atom'),
    ('CCCCCCCCCC', '10 heavy atoms'),
    ('[NH4+]', 'Charged'),
    ('C[N+](C)(C)[O-]', 'Charged'),              # zwitterion: net neutral, atoms charged
    ('[CH3]', 'Radicals'),
    ('C.C', '2 fragments'),
    ('CO.O', '2 fragments'),
])
def test_invalid_molecules(smiles, words):
    with pytest.raises(InvalidMoleculeError, match=words) as exc:
        validate_smiles(smiles)
    assert '\n' not in str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert not is_valid(smiles)


def test_nine_heavy_atoms_is_the_cap():
    assert validate_smiles('CCCCCCCCC') == 'CCCCCCCCC'
    with pytest.raises(InvalidMoleculeError, match='10 heavy atoms is more than the cap of 9'):
        validate_smiles('CCCCCCCCCC')
    assert validate_smiles('CCCCCCCCCC', max_heavy_atoms=10) == 'CCCCCCCCCC'


def test_non_string_input():
    with pytest.raises(InvalidMoleculeError):
        validate_smiles(None)
    with pytest.raises(InvalidMoleculeError):
        check_mol(parse_smiles('C.C'))


def test_counts_include_hydrogens():
    assert count_elements('CCO') == {'C': 2, 'O': 1, 'H': 6}
    assert count_elements('FC(F)F') == {'C': 1, 'F': 3, 'H': 1}
    assert count_atoms('CCO') == 9
    assert count_atoms('C#N') == 3
