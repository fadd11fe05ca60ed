"""Tests of the greedy selection (moldesign.select)"""
import pytest

from moldesign.select import greedy_selection


def test_lowest_first():
    assert greedy_selection(['C', 'CC', 'CCC', 'O'], [-1., -3., -2., 5.], 2) == ['CC', 'CCC']
    assert greedy_selection(['C', 'CC'], [-1., -3.], 5) == ['CC', 'C']
    assert greedy_selection(['C', 'CC'], [-1., -3.], 0) == []


def test_exclude_and_duplicates():
    smiles = ['CC', 'CCC', 'CC', 'O', 'N']
    scores = [-3., -2., -3., -1., -0.5]
    assert greedy_selection(smiles, scores, 3, exclude={'CCC'}) == ['CC', 'O', 'N']
    assert greedy_selection(smiles, scores, 10) == ['CC', 'CCC', 'O', 'N']


def test_ties_and_nan():
    assert greedy_selection(['O', 'N', 'C'], [1., 1., 1.], 2) == ['C', 'N']
    assert greedy_selection(['O', 'N', 'C'], [float('nan'), 1., 2.], 3) == ['N', 'C']


def test_errors():
    with pytest.raises(ValueError, match='scores'):
        greedy_selection(['C'], [], 1)
    with pytest.raises(ValueError, match='negative'):
        greedy_selection(['C'], [1.], -1)
