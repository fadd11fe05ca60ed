"""The candidate pool (moldesign.select.pool) and the acquisition functions, driven directly: no queues, no workers"""
import threading

import numpy as np
import pytest

from moldesign.select.acquisition import acquisition_scores
from moldesign.select.pool import CandidatePool
from moldesign.select.ranking import LIKELY_SUCCESS, Ranking, rank_candidates


def ranking(pairs, sources=None, std=None, success=None) -> Ranking:
    """A ranking of (smiles, predicted mean) pairs"""
    smiles = [s for s, _ in pairs]
    return Ranking(smiles=smiles, sources=sources or ['moldqn'] * len(smiles),
                   mean=np.array([m for _, m in pairs], dtype=float),
                   std=np.ones(len(smiles)) if std is None else np.asarray(std, dtype=float),
                   success=None if success is None else np.asarray(success, dtype=float), model=None, n_train=2)


def drain(pool, lane='steered'):
    out = []
    while (c := pool.pop(lane)) is not None:
        out.append(c)
    return out


def test_initial_lane_first_in_order_and_never_twice():
    pool = CandidatePool()
    assert pool.add_initial(['CCO', 'CC', 'CCO', 'CCC']) == 3
    initial = drain(pool, 'initial')
    assert [c.smiles for c in initial] == ['CCO', 'CC', 'CCC']
    assert all(c.lane == 'initial' and c.batch is None for c in initial)
    assert pool.add_initial(['CC', 'CCCC']) == 1  # CC was dispensed already
    pool.apply_ranking(ranking([('CCO', -1.), ('N', -2.)]))
    assert [c.smiles for c in drain(pool)] == ['N']  # Dispensed molecules are never queued again


def test_recency_most_recent_batch_first_best_rank_within_older_as_fallback():
    pool = CandidatePool(policy='recency', batch_size=2)
    first = pool.apply_ranking(ranking([('A', -1.), ('B', -3.), ('C', -2.)]))
    assert [c.smiles for c in first] == ['B', 'C']  # The best batch_size of the screening
    assert pool.pop('steered').smiles == 'B'
    second = pool.apply_ranking(ranking([('D', -0.5), ('E', -0.1)]))
    assert second[0].batch == first[0].batch + 1
    order = drain(pool)
    assert [c.smiles for c in order] == ['D', 'E', 'C']  # Newest batch first, even if predicted worse
    assert [(c.batch, c.rank) for c in order] == [(1, 0), (1, 1), (0, 1)]


def test_rerank_replaces_the_queue_with_the_whole_ranked_pool():
    pool = CandidatePool(policy='rerank', batch_size=1)
    pool.add(['A', 'B', 'C'], 'moldqn')
    assert pool.to_screen() == {'A': 'moldqn', 'B': 'moldqn', 'C': 'moldqn'}
    queued = pool.apply_ranking(ranking([('A', -1.), ('B', -2.), ('C', -3.)]))
    assert [c.smiles for c in queued] == ['C', 'B', 'A']  # The whole pool, not batch_size
    assert pool.pop('steered').smiles == 'C'
    assert set(pool.to_screen()) == {'A', 'B'}  # The pool keeps what was not dispensed
    pool.apply_ranking(ranking([('A', -5.), ('B', -2.)]))  # A newer model changes its mind
    assert [c.smiles for c in drain(pool)] == ['A', 'B']


def test_recency_screens_only_new_candidates():
    pool = CandidatePool(policy='recency')
    pool.add(['A', 'B'], 'moldqn')
    assert pool.has_unranked and set(pool.to_screen()) == {'A', 'B'}
    pool.apply_ranking(ranking([('A', -1.), ('B', -2.)]))
    assert not pool.has_unranked and pool.to_screen() == {}
    assert pool.add(['B', 'C'], 'moldqn') == 1
    assert pool.to_screen() == {'C': 'moldqn'}


def test_a_screening_ranks_every_candidate_it_was_given():
    """Candidates dropped by a screening (unembeddable, unpredictable, computed meanwhile) are not left unranked

    The batch baseline waits for ``has_unranked`` to clear before calling MolDQN again: a candidate left unranked
    would keep the generator screening forever (found by bench/utilization.py --quick).
    """
    for policy in ('recency', 'rerank'):
        pool = CandidatePool(policy=policy)
        pool.add(['A', 'B', 'C', 'D'], 'moldqn')
        pool.mark_taken(['D'])  # Computed while the screening ran
        result = ranking([('A', -9.), ('B', float('nan')), ('C', -2.), ('D', -5.)])
        result.infeasible, result.feasible = ['A'], ['C']
        assert [c.smiles for c in pool.apply_ranking(result)] == ['C']
        assert not pool.has_unranked
        assert set(pool.to_screen()) == (set() if policy == 'recency' else {'B', 'C'})  # rerank: the whole pool


def test_sources_take_turns_best_first_within_each():
    pool = CandidatePool(policy='rerank')
    pairs = [('M1', 3.), ('M2', 1.), ('M3', 2.), ('N1', 40.), ('N2', 10.), ('N3', 30.), ('N4', 20.)]
    sources = ['moldqn'] * 3 + ['neighbours'] * 4
    queued = pool.apply_ranking(ranking(pairs, sources))  # Neighbours predicted worse: every other slot anyway
    assert [c.smiles for c in queued] == ['M2', 'N2', 'M3', 'N4', 'M1', 'N3', 'N1']
    assert [c.rank for c in queued] == list(range(7))


def test_nan_predictions_are_never_queued():
    pool = CandidatePool()
    queued = pool.apply_ranking(ranking([('A', float('nan')), ('B', -1.)]))
    assert [c.smiles for c in queued] == ['B']


def test_expansions_once_per_depth_and_forgotten_on_failure():
    pool = CandidatePool()
    assert pool.expansions(['A', 'B', 'C'], depths=(2, 1, 1), mark=False) == {'A': 2, 'B': 1, 'C': 1}  # Only asks
    assert pool.expansions(['A', 'B', 'C'], depths=(2, 1, 1)) == {'A': 2, 'B': 1, 'C': 1}
    assert pool.expansions(['A', 'B', 'C'], depths=(2, 1, 1)) == {}
    assert pool.expansions(['B', 'A'], depths=(2, 1)) == {'B': 2}  # B became the best: deeper now
    pool.forget_expansions({'B': 2})
    assert pool.expansions(['B'], depths=(1,)) == {'B': 1}


def test_verify_lane_each_molecule_once():
    pool = CandidatePool()
    assert pool.push_verify('CCO') and not pool.push_verify('CCO')
    pool.mark_taken([], verified=['CC'])
    assert not pool.push_verify('CC')  # Verified by an earlier part of the run
    assert [(c.smiles, c.lane) for c in drain(pool, 'verify')] == [('CCO', 'verify')]


def test_marked_molecules_are_excluded():
    pool = CandidatePool()
    pool.mark_taken(['A'])
    assert pool.add(['A', 'B'], 'neighbours') == 1
    queued = pool.apply_ranking(ranking([('A', -9.), ('B', -1.)]))
    assert [c.smiles for c in queued] == ['B']


def test_pool_forgets_the_oldest_beyond_its_size():
    pool = CandidatePool(max_size=3)
    pool.add(['A', 'B', 'C', 'D'], 'moldqn')
    assert set(pool.to_screen()) == {'B', 'C', 'D'}


def test_pop_is_thread_safe():
    pool = CandidatePool()
    pool.apply_ranking(ranking([(f'C{i}', float(i)) for i in range(2000)]))
    taken = []

    def worker():
        while (c := pool.pop('steered')) is not None:
            taken.append(c.smiles)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(f'C{i}' for i in range(2000))  # Each exactly once


@pytest.mark.parametrize('policy', ['rerank', 'recency'])
def test_molecules_dispensed_while_a_ranking_is_built_are_left_out(policy, monkeypatch):
    """The new order is built without the pool's lock: the QC submitter pops meanwhile, and never gets a duplicate"""
    import moldesign.select.pool as pool_module
    pool = CandidatePool(policy=policy, batch_size=8)
    pool.apply_ranking(ranking([('A', 1.), ('B', 2.)]))
    popped = []
    alternate = pool_module._alternate

    def alternate_while_popping(sources, scores, last=None):
        thread = threading.Thread(target=lambda: popped.append(pool.pop('steered').smiles))
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), 'pop() waited for the ranking'
        return alternate(sources, scores, last)

    monkeypatch.setattr(pool_module, '_alternate', alternate_while_popping)
    queued = pool.apply_ranking(ranking([('A', 1.), ('B', 2.), ('C', 3.)]))
    assert popped == ['A']
    assert [c.smiles for c in queued] == ['B', 'C']
    assert [c.smiles for c in drain(pool)] == ['B', 'C']


def test_a_limited_ranking_queues_the_best_and_keeps_the_rest_in_the_pool():
    pool = CandidatePool(policy='rerank')
    queued = pool.apply_ranking(ranking([('A', 3.), ('B', 1.), ('C', 2.)]), limit=2)
    assert [c.smiles for c in queued] == ['B', 'C'] and [c.smiles for c in drain(pool)] == ['B', 'C']
    assert set(pool.to_screen()) == {'A'} and not pool.has_unranked  # Ranked once, re-ranked by the next screening


def test_acquisition_functions():
    mean, std = np.array([0., 0., -1.]), np.array([1., 3., 0.1])
    assert list(acquisition_scores(mean, std, 'greedy')) == [0., 0., -1.]
    ucb = acquisition_scores(mean, std, 'ucb')
    assert np.argmin(ucb) == 1  # The uncertain one is the most promising by its optimistic bound
    ei = acquisition_scores(mean, std, 'ei', best=-0.5)
    assert np.all(ei <= 0) and np.argmin(ei) == 1
    assert list(acquisition_scores(mean, std, 'ei')) == list(mean)  # No best yet: greedy
    with pytest.raises(ValueError, match='Unknown acquisition'):
        acquisition_scores(mean, std, 'thompson')


def test_rank_candidates_fits_expands_and_predicts():
    training = [('CCO', -800.), ('CCC', -950.), ('CC', -700.), ('CCCC', -1200.)]
    result = rank_candidates(training, {'CCCCC': 'moldqn'}, 'atomization_energy', expand={'CCCC': 1})
    assert result.smiles[0] == 'CCCCC' and result.sources[0] == 'moldqn'
    assert 'CCCCCC' in result.smiles or 'CCC(C)C' in result.smiles  # One edit from butane
    assert all(s == 'neighbours' for s in result.sources[1:])
    assert not set(result.smiles) & {s for s, _ in training}  # Computed molecules are not candidates
    assert len(result.mean) == len(result.std) == len(result.smiles) and np.all(np.isfinite(result.mean))
    assert result.n_train == 4 and result.expanded == {'CCCC': 1}
    assert hasattr(result.model, 'predict')


def test_unembeddable_candidates_are_never_queued():
    pool = CandidatePool()
    result = ranking([('A', -9.), ('B', -1.), ('C', -2.)])
    result.infeasible, result.feasible = ['A'], ['B']
    queued = pool.apply_ranking(result)
    assert [c.smiles for c in queued] == ['C', 'B'] and pool.infeasible == {'A'}
    assert pool.embeddable(['A', 'B', 'C']) == ['B']
    assert pool.add(['A'], 'moldqn') == 0  # Excluded for good


def test_screening_checks_the_best_candidates_for_a_3d_embedding():
    training = [('CCO', -800.), ('CCC', -950.), ('CC', -700.), ('CCCC', -1200.)]
    cage = 'C1C2C3OC4C5C1C34C25'  # RDKit cannot embed it (QC failed on it in a benchmark)
    result = rank_candidates(training, {cage: 'moldqn', 'CCCCC': 'moldqn', 'CCCCCC': 'moldqn'},
                             'atomization_energy', check_top=3, checked=['CCCCCC'])
    assert result.infeasible == [cage]
    assert result.feasible == ['CCCCC']  # CCCCCC was checked before


def test_bredt_violations_are_infeasible_without_an_embedding_attempt():
    training = [('CCO', -800.), ('CCC', -950.), ('CC', -700.), ('CCCC', -1200.)]
    bridgehead_alkene = 'CCC1=C2CCC1(CC)C2'  # Predicted best (most carbons), and breaks Bredt's rule
    result = rank_candidates(training, {bridgehead_alkene: 'neighbours', 'CCCCC': 'moldqn', 'CCCCCC': 'moldqn'},
                             'atomization_energy', check_top=1)
    assert result.mean[0] == result.mean.min()
    assert result.infeasible == [bridgehead_alkene]
    assert result.feasible == ['CCCCCC']  # The one embedding attempt went to the next best


@pytest.mark.parametrize('policy', ['rerank', 'recency'])
def test_likely_qc_failures_come_after_every_other_candidate(policy):
    pool = CandidatePool(policy=policy, batch_size=8)
    pairs = [('cage1', -9.), ('A', -3.), ('cage2', -8.), ('B', -2.), ('C', -1.)]
    pool.apply_ranking(ranking(pairs, sources=['moldqn', 'moldqn', 'neighbours', 'neighbours', 'moldqn'],
                               success=[0.2, 0.9, LIKELY_SUCCESS - 0.05, LIKELY_SUCCESS, 0.99]))
    # Best first and the sources alternating among the likely successes (at least LIKELY_SUCCESS); then the likely
    # failures, best first
    assert [c.smiles for c in drain(pool)] == ['A', 'B', 'C', 'cage1', 'cage2']


def test_screening_reports_the_success_probability_once_qc_has_failed():
    training = [('CCO', -800.), ('CC', -700.), ('CCC', -950.), ('CCCC', -1200.), ('OCCO', -900.), ('CCCO', -1100.)]
    candidates = {'CCCCC': 'moldqn', 'C12C3C4C1C2C34': 'moldqn'}
    assert rank_candidates(training, candidates, 'atomization_energy').success is None
    result = rank_candidates(training, candidates, 'atomization_energy',
                             failures=['C1C2CC3C1C23', 'C1C2C3C1C23', 'C12C3C4C1C5C2C3C45'])
    success = dict(zip(result.smiles, result.success))
    assert success['CCCCC'] > 0.5 > success['C12C3C4C1C2C34']
    pool = CandidatePool()
    pool.apply_ranking(result)
    assert [c.smiles for c in drain(pool)] == ['CCCCC', 'C12C3C4C1C2C34']


def test_screening_checks_until_enough_candidates_are_feasible():
    training = [('CCO', -800.), ('CC', -700.), ('CCC', -950.), ('CCCC', -1200.)]
    full = rank_candidates(training, {}, 'atomization_energy', expand={'CCCC': 1}, check_top=20)
    assert len(full.feasible) + len(full.infeasible) == min(20, len(full.smiles))
    enough = rank_candidates(training, {}, 'atomization_energy', expand={'CCCC': 1}, check_top=20, enough=3)
    assert len(enough.feasible) == 3 and enough.feasible == full.feasible[:3]


def test_the_check_covers_the_candidates_the_queue_dispenses_first():
    """Likely failures go last in the queue, so the embedding check skips them: the first molecules dispensed are
    checked ones (an unchecked cage that cannot be embedded used to reach QC when a checked one was demoted)"""
    training = [('CCO', -800.), ('CC', -700.), ('CCC', -950.), ('CCCC', -1200.), ('OCCO', -900.), ('CCCO', -1100.),
                ('C1CC1', -900.), ('C1CCC1', -1150.)]
    failures = ['C1C2CC3C1C23', 'C1C2C3C1C23', 'C12C3C4C1C5C2C3C45']
    result = rank_candidates(training, {}, 'atomization_energy', expand={'C1CCC1': 2, 'CCCC': 1}, failures=failures,
                             check_top=11)
    success = dict(zip(result.smiles, result.success))
    best = [result.smiles[i] for i in np.argsort(result.mean, kind='stable')[:11]]
    demoted = [s for s in best if success[s] < LIKELY_SUCCESS]
    assert demoted  # Among the 11 best predicted: a molecule the queue puts last
    checked = result.feasible + result.infeasible
    assert len(checked) == 11 and not set(demoted) & set(checked)
    pool = CandidatePool()
    pool.apply_ranking(result)
    first = [c.smiles for c in drain(pool)][:len(result.feasible)]
    assert set(first) == set(result.feasible)  # Every molecule dispensed first was checked


def test_unranked_candidates_fill_a_dry_queue_only_with_the_fallback():
    for fallback in (False, True):
        pool = CandidatePool(unranked_fallback=fallback)
        pool.apply_ranking(ranking([('A', 1.)]))
        pool.add(['B', 'C'], 'moldqn')  # MolDQN's molecules, not screened yet
        out = [c.smiles for c in drain(pool)]
        if not fallback:  # The batch baseline waits for the screening
            assert out == ['A'] and pool.has_unranked
        else:  # Ranked first, then the newest unranked rather than an idle QC slot
            assert out == ['A', 'C', 'B'] and not pool.has_unranked and pool.n_unranked_dispensed == 2
            assert pool.add(['B'], 'moldqn') == 0  # Dispensed: never again
