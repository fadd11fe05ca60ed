"""Tests of the group-contribution featurizer and model (moldesign.score)"""
import pickle
import time

import numpy as np
import pytest

from moldesign.chem import count_atoms
from moldesign.score import OBJECTIVES, OTHER, GroupCountFeaturizer, compute_score, train_model


@pytest.fixture(scope='module')
def qm9_train():
    from moldesign.qm9 import sample_molecules
    return sample_molecules(300, seed=1)


@pytest.fixture(scope='module')
def qm9_test():
    from moldesign.qm9 import sample_molecules
    data = sample_molecules(1300, seed=2)
    return data.iloc[300:]  # Other molecules than the training sample (seed differs too)


@pytest.fixture(scope='module')
def model(qm9_train):
    return train_model(qm9_train.smiles.tolist(), qm9_train.atomization_energy.tolist())


def _counts(featurizer, smiles):
    row = featurizer.transform([smiles])[0]
    names = featurizer.get_feature_names_out()
    return {n: c for n, c in zip(names, row) if c}


def test_known_group_counts():
    feat = GroupCountFeaturizer(atom_types=False, ring_sizes=False).fit(['CCO', 'c1ccccc1', 'CC#N', 'CC(C)=O'])
    assert _counts(feat, 'CCO') == {'C4(-C4)': 1, 'C4(-C4,-O2)': 1, 'O2(-C4)': 1}
    assert _counts(feat, 'c1ccccc1') == {'c3(:c3,:c3)': 6}
    assert _counts(feat, 'CC#N') == {'C4(-C2)': 1, 'C2(#N1,-C4)': 1, 'N1(#C2)': 1}
    assert _counts(feat, 'CC(C)=O') == {'C4(-C3)': 2, 'C3(-C4,-C4,=O1)': 1, 'O1(=C3)': 1}
    # Fluoromethane's groups are not in the vocabulary: they go to "other", never dropped
    assert _counts(feat, 'CF') == {OTHER: 2}
    assert _counts(feat, 'CCF') == {'C4(-C4)': 1, OTHER: 2}


def test_ring_sizes():
    """Rings are counted by size, whether or not training saw them: strain is invisible to the groups"""
    feat = GroupCountFeaturizer(atom_types=False).fit(['CCCC'])
    assert _counts(feat, 'CCCC') == {'C4(-C4)': 2, 'C4(-C4,-C4)': 2}
    # Cyclobutane's groups are butane's inner CH2 groups: only the ring feature tells them apart
    assert _counts(feat, 'C1CCC1') == {'C4(-C4,-C4)': 4, 'ring:4': 1}
    counts = _counts(feat, 'C1CC2CC2C1')  # bicyclo[3.1.0]hexane
    assert counts['ring:3'] == 1 and counts['ring:5'] == 1 and counts[OTHER] == 2
    assert _counts(feat, 'C1CCCCCCCC1')['ring:8'] == 1  # 9-membered: the "8 and more" column
    names = list(feat.get_feature_names_out())
    assert all(label in names for label in ('ring:3', 'ring:4', 'ring:8'))


def test_atom_types_level():
    feat = GroupCountFeaturizer().fit(['CCO'])
    counts = _counts(feat, 'CCO')
    assert counts['atom:C4'] == 2 and counts['atom:O2'] == 1
    # Unknown group: still counted in "other", its atom type still known
    counts = _counts(feat, 'COC')
    assert counts[OTHER] == 3 and counts['atom:C4'] == 2 and counts['atom:O2'] == 1
    names = feat.get_feature_names_out()
    assert len(names) == len(feat.vocabulary_) and names[-1] == OTHER


def test_featurizer_errors():
    with pytest.raises(ValueError, match='not fitted'):
        GroupCountFeaturizer().transform(['C'])
    feat = GroupCountFeaturizer().fit(['C'])
    with pytest.raises(ValueError, match='RDKit cannot parse'):
        feat.transform(['C1CC'])
    with pytest.raises(ValueError, match='single string'):
        feat.transform('CCO')


def test_model_fits_and_predicts(model, qm9_train, qm9_test):
    # Fitting is fast
    start = time.perf_counter()
    train_model(qm9_train.smiles.tolist(), qm9_train.atomization_energy.tolist())
    assert time.perf_counter() - start < 5  # Generous bound, only to catch pathological slowness

    mean, std = compute_score(model, qm9_test.smiles.tolist())
    truth = qm9_test.atomization_energy.to_numpy()
    assert mean.shape == std.shape == truth.shape
    assert np.all(std > 0)
    mae = np.abs(mean - truth).mean()
    assert mae < 30, mae  # Spread of QM9 atomization energies: ~ 230 kcal/mol
    assert np.corrcoef(mean, truth)[0, 1] > 0.98

    # Per-atom objective: total divided by the atom count with H
    mean_pa, std_pa = compute_score(model, qm9_test.smiles.tolist()[:20], 'atomization_energy_per_atom')
    n_atoms = np.array([count_atoms(s) for s in qm9_test.smiles[:20]])
    assert np.allclose(mean_pa * n_atoms, mean[:20])
    assert np.allclose(std_pa * n_atoms, std[:20])

    # The model survives pickling (it travels to the workers)
    copy = pickle.loads(pickle.dumps(model))
    assert np.allclose(compute_score(copy, ['CCO'])[0], compute_score(model, ['CCO'])[0])


def test_unknown_groups_are_less_certain(model):
    # Fluorine-rich groups are rare in QM9: a molecule made only of unseen groups is more uncertain
    feat = model['featurizer']
    known, strange = 'CCCCO', 'FN(F)N(F)F'
    assert _counts(feat, known).get(OTHER, 0) == 0
    assert _counts(feat, strange)[OTHER] > 0
    _, std = compute_score(model, [known, strange])
    assert std[1] > std[0]


def test_compute_score_errors(model):
    assert OBJECTIVES == ('atomization_energy', 'atomization_energy_per_atom')
    with pytest.raises(ValueError, match='Unknown objective'):
        compute_score(model, ['C'], 'homo_lumo_gap')
    mean, std = compute_score(model, [])
    assert len(mean) == len(std) == 0
    with pytest.raises(ValueError, match='at least 2'):
        train_model(['C'], [-400.])
    with pytest.raises(ValueError, match='values'):
        train_model(['C', 'N'], [-400.])


def test_additivity(model):
    # Group contributions are additive: the longer alkane is predicted more negative
    mean, _ = compute_score(model, ['CCCCCCC', 'CCCCCCCC', 'CCCCCCCCC'])
    assert mean[0] > mean[1] > mean[2]


def test_feasibility_model_learns_a_failing_family():
    from moldesign.score import FeasibilityModel
    ok = ['CCO', 'CCC', 'CCCC', 'CC(C)O', 'CCN', 'OCCO', 'CC(C)C', 'CCCO', 'C1CCCCC1', 'CC1CCCO1']
    failed = ['C1C2CC3C1C23', 'C12C3C4C1C5C2C3C45', 'C1C2C3C1C23']
    model = FeasibilityModel().fit(ok + failed, [True] * len(ok) + [False] * len(failed))
    p = model.predict_proba(['CCCCC', 'C12C3C4C1C2C34', 'C1CCOC1'])[:, 1]
    assert p[0] > 0.5 > p[1] and p[2] > p[1]  # A new cage of the family is flagged, a plain chain is not
    assert list(model.predict(['CCCCC'])) == [True]
    prior = FeasibilityModel(prior=0.9).fit(ok, [True] * len(ok))  # No failure yet: the prior, for everything
    assert list(prior.predict_proba(['C1C2CC3C1C23'])[:, 1]) == [0.9]


def test_estimate_verified_adds_the_learned_difference_and_divides_per_atom():
    from moldesign.score import estimate_verified, train_steering_model
    training = [('CCO', -800.), ('CC', -700.), ('CCC', -950.), ('CCCC', -1200.), ('OCCO', -900.)]
    delta = train_steering_model(training, verified=[('CCO', 50.), ('OCCO', 100.), ('CC', 0.)]).delta
    smiles, search = ['OCCCO', 'CCCC'], [-1100., -1200.]
    total = estimate_verified(delta, smiles, search)
    np.testing.assert_allclose(total, np.asarray(search) + delta.predict(smiles))
    assert total[0] - search[0] > total[1] - search[1] + 20  # The O-rich molecule carries the correction
    per_atom = estimate_verified(delta, smiles, search, 'atomization_energy_per_atom')
    np.testing.assert_allclose(per_atom, total / np.array([count_atoms(s) for s in smiles]))


def test_steering_model_corrects_toward_verification_and_penalises_failures():
    from moldesign.score import train_steering_model
    training = [('CCO', -800.), ('CC', -700.), ('CCC', -950.), ('CCCC', -1200.), ('OCCO', -900.)]
    plain = train_steering_model(training)
    corrected = train_steering_model(training, verified=[('CCO', 50.), ('OCCO', 100.), ('CC', 0.)])
    base, _ = compute_score(plain, ['OCCCO'], 'atomization_energy')
    shifted, _ = compute_score(corrected, ['OCCCO'], 'atomization_energy')
    assert shifted[0] > base[0] + 20  # O-rich molecules were overbound by the search method: moved up
    one = train_steering_model(training, verified=[('CCO', 50.)])
    assert one.delta is None  # One verified molecule is not enough to learn a correction
    penalised = train_steering_model(training, failures=['C1C2CC3C1C23', 'C1C2C3C1C23'])
    cage, chain = 'C12C3C4C1C2C34', 'CCCCC'
    assert penalised.failure_weight([cage])[0] > 0 and penalised.failure_weight([chain])[0] == 0
    penalised_cage = compute_score(penalised, [cage], 'atomization_energy')[0][0]
    assert penalised_cage > compute_score(plain, [cage], 'atomization_energy')[0][0]
    success = penalised.success_probability([cage, chain])  # Given by a caller that has them: the same scores
    for objective in ('atomization_energy', 'atomization_energy_per_atom'):
        np.testing.assert_array_equal(compute_score(penalised, [cage, chain], objective, success=success)[0],
                                      compute_score(penalised, [cage, chain], objective)[0])


def test_strain_model_learns_the_limit_from_failures():
    from moldesign.score import StrainModel
    from moldesign.simulate.embed import strain_energy
    ok = ['CCO', 'CCCC', 'C1CCCCC1', 'CC1CCCO1', 'OCC12NC1C1CC2O1', 'CCC12CCOCC1C2']
    failed = ['C1OC2C3OC45C2C4C135', 'C1C23C4OC15C41OC2C351', 'C1OC2C3C45OC16C24C365']  # Broke in GFN2-xTB
    assert all(strain_energy(s) > strain_energy('CCCC') for s in failed)
    model = StrainModel().fit(ok + failed[:2], [True] * len(ok) + [False] * 2)
    assert np.median([strain_energy(s) for s in ok]) < model.limit_ < min(strain_energy(s) for s in failed[:2])
    assert list(model.predict(['CCCCC', failed[2]])) == [True, False]  # A new cage beyond the limit
    assert model.learned_
    one = StrainModel().fit(ok + failed[:1], [True] * len(ok) + [False])  # One failure: the prior, ~QM9's 99th pct
    assert not one.learned_ and one.limit_ == StrainModel().prior_limit
    # The three cages are more strained than 99 % of QM9, the fused aziridine-oxetane of the successes is not
    assert list(one.predict(ok[-2:] + failed)) == [True, True, False, False, False]
    none = StrainModel(prior_limit=None).fit(ok, [True] * len(ok))
    assert none.limit_ is None and none.predict(failed).all()
    assert strain_energy('C1OC2C3C4C15OC34C25') is None  # Cannot be embedded quickly: the embedding check judges
