"""The thinker's control flow, with Colmena's local task server (worker processes) running the real task functions.

Parsl is exercised by the end-to-end tests in test_run.py; here the point is how the thinker ends.
"""
import json

import pytest
from colmena.task_server.local import LocalTaskServer

from moldesign.sample import DQNAgent, generate_molecules
from moldesign.score import compute_score
from moldesign.simulate import compute_atomization_energy, compute_reference_energy, get_spec
from moldesign.steer.server import ThreadSafePipeQueues, TOPICS
from moldesign.steer.thinker import MoleculeDesignThinker, RunAborted
from moldesign.store import RunStore

INITIAL = ['CCO', 'CC(C)O', 'OCCO', 'CCCC']


def _run_thinker(tmp_path, agent, search_size=3, **kwargs):
    queues = ThreadSafePipeQueues(topics=TOPICS)
    server = LocalTaskServer(queues, [compute_reference_energy, compute_atomization_energy, generate_molecules,
                                      compute_score], threads=False, num_workers=2)
    store = RunStore(tmp_path / 'run')
    thinker = MoleculeDesignThinker(queues, store, get_spec('xtb'), objective='atomization_energy',
                                    search_size=search_size, initial_smiles=INITIAL, parallel_guesses=1,
                                    batch_size=4, rl_episodes=2, agent=agent, rl_options={'max_steps': 4}, **kwargs)
    server.start()
    try:
        thinker.start()
        thinker.join(timeout=300)
        assert not thinker.is_alive(), 'the thinker hung'
    finally:
        queues.send_kill_signal()
        server.join(30)
        if server.is_alive():
            server.terminate()
        store.close()
    return thinker, store


def _molecules(store):
    return [r for r in store.read_records('simulation_records.jsonld') if r['method'] == 'compute_atomization_energy']


@pytest.mark.slow
def test_thinker_ends_when_the_generator_fails(tmp_path):
    """A generator that cannot work (here: no agent) ends the run with a clear error, never a hang"""
    thinker, store = _run_thinker(tmp_path, agent=None)
    assert any(isinstance(e, RunAborted) and 'generate_molecules failed 3 times' in str(e) for e in thinker.errors)
    molecules = _molecules(store)
    assert sorted(r['smiles'] for r in molecules) == sorted(INITIAL)  # Initial results kept on disk
    assert all(r['success'] for r in molecules)
    assert len(store.read_records('rl_records.jsonld')) == 3
    assert json.loads((store.run_dir / 'reference_energies.json').read_text()).keys() == {'H', 'C', 'N', 'O', 'F'}


@pytest.mark.slow
def test_thinker_steers_without_duplicates(tmp_path):
    thinker, store = _run_thinker(tmp_path, agent=DQNAgent(seed=1), search_size=4, qc_prefetch=0)
    assert not thinker.errors
    molecules = _molecules(store)
    smiles = [r['smiles'] for r in molecules]
    assert len(smiles) == len(set(smiles)) == 8
    steered = sorted((r for r in molecules if r['phase'] == 'steered'), key=lambda r: r['timestamp']['created'])
    assert len(steered) == 4 and all(r['batch'] >= 0 for r in steered)
    # Within each batch the consumer takes the best-ranked molecules first, in submission order; a re-rank by
    # a newer model starts the ranks again from 0
    for batch in {r['batch'] for r in steered}:
        ranks = [r['rank'] for r in steered if r['batch'] == batch]
        assert all(rank == 0 or rank > previous for previous, rank in zip(ranks, ranks[1:])), ranks


def test_reference_failure_aborts(tmp_path):
    """If an atom reference cannot be computed, nothing else can: the run stops with the reason"""
    spec = get_spec('pyscf/hf/no-such-basis')
    queues = ThreadSafePipeQueues(topics=TOPICS)
    server = LocalTaskServer(queues, [compute_reference_energy, compute_atomization_energy], threads=False, num_workers=2)
    store = RunStore(tmp_path / 'run')
    thinker = MoleculeDesignThinker(queues, store, spec, objective='atomization_energy', search_size=2,
                                    initial_smiles=INITIAL, parallel_guesses=1, batch_size=4, rl_episodes=1,
                                    agent=None)
    server.start()
    try:
        thinker.start()
        thinker.join(timeout=120)
        assert not thinker.is_alive()
    finally:
        queues.send_kill_signal()
        server.join(30)
        store.close()
    assert any(isinstance(e, RunAborted) and 'Reference energy' in str(e) for e in thinker.errors)
    failed = [r for r in store.read_records('simulation_records.jsonld') if not r['success']]
    assert len(failed) == 5 and all(r['phase'] == 'reference' for r in failed)


def _overlapping_pairs(records):
    intervals = sorted((r['timestamp']['compute_started'], r['timestamp']['compute_ended']) for r in records)
    return sum(1 for (_, end), (start, _) in zip(intervals, intervals[1:]) if start < end)


@pytest.mark.parametrize('prefetch', [0, 1])
def test_prefetch_bounds_tasks_in_flight(tmp_path, prefetch):
    """One QC slot: without prefetch, tasks never overlap on the (two) workers; with one prefetched, they do"""
    thinker, store = _run_thinker(tmp_path, agent=None, search_size=0, qc_prefetch=prefetch)
    assert not thinker.errors
    assert thinker.max_in_flight == 1 + prefetch
    molecules = _molecules(store)
    assert sorted(r['smiles'] for r in molecules) == sorted(INITIAL)
    overlaps = _overlapping_pairs(molecules)
    assert overlaps == 0 if prefetch == 0 else overlaps > 0


def test_prefetch_must_not_be_negative(tmp_path):
    with pytest.raises(ValueError, match='qc_prefetch'):
        MoleculeDesignThinker(ThreadSafePipeQueues(topics=TOPICS), RunStore(tmp_path / 'run'), get_spec('xtb'),
                              objective='atomization_energy', search_size=1, initial_smiles=INITIAL,
                              parallel_guesses=1, batch_size=4, rl_episodes=1, agent=None, qc_prefetch=-1)


def _thinker_with_results(tmp_path, results, batch_size=6):
    """A thinker that knows some QC results (as after a restart); no task server: only its selection logic runs"""
    records = [{'smiles': s, 'success': True, 'objective': v, 'value': {'atomization_energy': v}, 'evaluation': i,
                'phase': 'initial', 'batch': -1} for i, (s, v) in enumerate(results.items())]
    return MoleculeDesignThinker(ThreadSafePipeQueues(topics=TOPICS), RunStore(tmp_path / 'run'), get_spec('xtb'),
                                 objective='atomization_energy', search_size=8, initial_smiles=[],
                                 parallel_guesses=1, batch_size=batch_size, rl_episodes=1, agent=None,
                                 previous_records=records)


def test_neighbourhoods_of_the_best_join_the_pool_once(tmp_path):
    """Two edits from the best molecule (octanol -> nonane: cut the O, add a C) become candidates at once"""
    thinker = _thinker_with_results(tmp_path, {'CCCCCCCCO': -2500., 'CCO': -700., 'CCCC': -1200.})
    added = thinker._expand_best()
    assert added > 100 and 'CCCCCCCCC' in thinker.pool and 'CCCCCCCCC' in thinker.neighbours
    assert not set(thinker.pool) & {'CCCCCCCCO', 'CCO', 'CCCC'}  # Computed molecules are never candidates
    assert thinker.expanded == {'CCCCCCCCO': 2, 'CCCC': 2, 'CCO': 1}
    assert thinker._expand_best() == 0  # Each molecule is expanded once


def test_selection_alternates_moldqn_and_neighbourhood_candidates(tmp_path):
    import numpy as np
    thinker = _thinker_with_results(tmp_path, {'CCO': -700.})
    rl, near = ['C1', 'C2', 'C3'], ['N1', 'N2', 'N3', 'N4']
    thinker.neighbours.update(near)
    pool = rl + near
    mean = np.array([3., 1., 2., 40., 10., 30., 20.])  # Neighbours predicted worse: they still get every other slot
    assert thinker._select(pool, mean, exclude={'C3'}, n=5) == ['C2', 'N2', 'C1', 'N4', 'N3']
