"""The thinker's task plumbing, with Colmena's local task server (worker processes) running the real task functions.

Parsl is exercised by the end-to-end tests in test_run.py; here the point is what the thinker submits, records
and how it ends.
"""
import threading
import time

import pytest
from colmena.models import Result
from colmena.task_server.local import LocalTaskServer

from moldesign.sample import DQNAgent, generate_molecules
from moldesign.select.ranking import rank_candidates, warm_up
from moldesign.simulate import compute_atomization_energy, compute_reference_energy, get_spec
from moldesign.simulate.bundle import compute_atomization_energies
from moldesign.steer.generator import BOOTSTRAP_SCREENINGS
from moldesign.steer.params import RunParams
from moldesign.steer.queues import TOPICS, ThreadSafePipeQueues
from moldesign.steer.server import stop_task_server, time_limited
from moldesign.steer.thinker import MoleculeDesignThinker, RunAborted
from moldesign.store import SIMULATION_RECORDS, RunStore, read_jsonl

INITIAL = ['CCO', 'CC(C)O', 'OCCO', 'CCCC']
PARAMS = dict(qc_workers=1, qc_prefetch=1, batch_size=4, rl_episodes=2, rl_steps=4, ml_workers=2)


def _run_thinker(tmp_path, agent, spec='xtb', qc_functions=None, **params):
    queues = ThreadSafePipeQueues(topics=TOPICS)
    functions = qc_functions or [compute_reference_energy, compute_atomization_energy, compute_atomization_energies]
    server = LocalTaskServer(queues, functions + [generate_molecules, rank_candidates, warm_up], threads=False,
                             num_workers=2)
    store = RunStore(tmp_path / 'run')
    verify = get_spec(params['verify_qc']) if params.get('verify_qc') else None
    thinker = MoleculeDesignThinker(queues, store, RunParams(**{**PARAMS, 'search_size': 3, **params}),
                                    get_spec(spec), agent=agent, initial_smiles=INITIAL, verify_spec=verify)
    server.start()
    try:
        thinker.start()
        thinker.join(timeout=300)
        assert not thinker.is_alive(), 'the thinker hung'
    finally:
        stop_task_server(server, queues, timeout=30)  # Kills its process tree if it does not stop: no orphans
        store.close()
    return thinker, store


def _molecules(store):
    return [r for r in read_jsonl(store.path(SIMULATION_RECORDS))[0] if r.get('smiles')]


@pytest.mark.slow
def test_thinker_ends_when_the_generator_fails(tmp_path):
    """A generator that cannot work (here: no agent) ends the run with a clear error, never a hang"""
    thinker, store = _run_thinker(tmp_path, agent=None, sources=['moldqn'])
    assert any(isinstance(e, RunAborted) and 'generate_molecules failed 3 times' in str(e) for e in thinker.errors)
    molecules = _molecules(store)
    assert sorted(r['smiles'] for r in molecules if r['phase'] == 'initial') == sorted(INITIAL)  # Kept on disk
    assert len(read_jsonl(store.path('rl_records.jsonld'))[0]) == 3


@pytest.mark.slow
def test_thinker_steers_without_duplicates(tmp_path):
    thinker, store = _run_thinker(tmp_path, agent=DQNAgent(seed=1), search_size=4, qc_prefetch=0)
    assert not thinker.errors
    molecules = _molecules(store)
    smiles = [r['smiles'] for r in molecules]
    assert len(smiles) == len(set(smiles)) == 8
    assert [r['evaluation'] for r in molecules] == list(range(1, 9))
    steered = sorted((r for r in molecules if r['phase'] == 'steered'), key=lambda r: r['timestamp']['created'])
    assert len(steered) == 4 and all(r['batch'] >= 0 and r['predicted'] is not None for r in steered)
    assert all(r['source'] in ('moldqn', 'neighbours') for r in steered)
    # Within each batch the consumer takes the best-ranked molecules first, in submission order
    for batch in {r['batch'] for r in steered}:
        ranks = [r['rank'] for r in steered if r['batch'] == batch]
        assert ranks == sorted(ranks), ranks
    assert thinker.batches_done >= 1 and thinker.model is not None


def test_reference_failure_aborts(tmp_path):
    """If an atom reference cannot be computed, nothing else can: the run stops with the reason"""
    thinker, store = _run_thinker(tmp_path, agent=None, spec='pyscf/hf/no-such-basis')
    assert any(isinstance(e, RunAborted) and 'Reference energy of' in str(e) and 'try another' in str(e)
               for e in thinker.errors)
    records = read_jsonl(store.path(SIMULATION_RECORDS))[0]
    assert records and all(not r['success'] and r['phase'] == 'reference' for r in records)
    assert not _molecules(store)


def _overlapping_pairs(records):
    intervals = sorted((r['timestamp']['compute_started'], r['timestamp']['compute_ended']) for r in records)
    return sum(1 for (_, end), (start, _) in zip(intervals, intervals[1:]) if start < end)


@pytest.mark.parametrize('prefetch', [0, 1])
def test_prefetch_bounds_tasks_in_flight(tmp_path, prefetch):
    """One QC worker: without prefetch, tasks never overlap on the (two) processes; with one prefetched, they do"""
    thinker, store = _run_thinker(tmp_path, agent=None, search_size=0, qc_prefetch=prefetch)
    assert not thinker.errors
    molecules = _molecules(store)
    assert sorted(r['smiles'] for r in molecules) == sorted(INITIAL)
    overlaps = _overlapping_pairs(molecules)
    assert overlaps == 0 if prefetch == 0 else overlaps > 0


def test_qc_time_limit_is_a_recorded_failure(tmp_path):
    """--qc-timeout: a molecule over the limit is a failed record naming the limit; the run goes on"""
    limited = time_limited(compute_atomization_energy, 0.001)
    thinker, store = _run_thinker(tmp_path, agent=None, search_size=0,
                                  qc_functions=[compute_reference_energy, limited, compute_atomization_energies])
    assert not thinker.errors
    molecules = _molecules(store)
    assert len(molecules) == 4 and not any(r['success'] for r in molecules)
    assert all('QC time limit of 0.001 s' in r['failure_info']['exception'] for r in molecules)


def test_bundles_give_one_record_per_molecule(tmp_path):
    thinker, store = _run_thinker(tmp_path, agent=None, search_size=0, qc_bundle=3)
    assert not thinker.errors
    molecules = _molecules(store)
    assert sorted(r['smiles'] for r in molecules) == sorted(INITIAL)
    assert [r['evaluation'] for r in molecules] == [1, 2, 3, 4]
    by_task = {}
    for r in molecules:
        by_task.setdefault(r['task_id'], []).append(r)
    assert sorted(len(rs) for rs in by_task.values()) == [1, 3]  # 3 + 1 molecules
    for rs in by_task.values():
        assert all(r['success'] for r in rs)
        bundle = 'compute_atomization_energies' if len(rs) > 1 else 'compute_atomization_energy'
        assert {r['method'] for r in rs} == {bundle}


def test_a_late_result_is_written(tmp_path):
    """A QC result that arrives while the task server shuts down is written, and is no longer counted lost"""
    store = RunStore(tmp_path / 'run')
    thinker = MoleculeDesignThinker(ThreadSafePipeQueues(topics=TOPICS), store, RunParams(**PARAMS),
                                    get_spec('xtb'), agent=None, initial_smiles=INITIAL)
    from moldesign.select.pool import Candidate
    thinker.in_flight['task-1'] = [Candidate('CCO', 'initial', source='initial')]
    thinker.lost_in_flight = ['CCO']
    result = Result(inputs=(('CCO',), {}), method='compute_atomization_energy',
                    task_info=thinker._info(Candidate('CCO', 'initial')))
    result.task_id = 'task-1'
    result.set_result(None)
    result.success = False
    thinker.record_late_result(result)
    store.close()
    records = _molecules(store)
    assert [r['smiles'] for r in records] == ['CCO'] and thinker.lost_in_flight == []
    assert not thinker.in_flight


def test_a_result_counts_only_once_its_record_is_synced(tmp_path):
    """The consumer writes the record and frees the slot at once; the syncer syncs, and only then does it count"""
    store = RunStore(tmp_path / 'run')
    thinker = MoleculeDesignThinker(ThreadSafePipeQueues(topics=TOPICS), store, RunParams(**PARAMS),
                                    get_spec('xtb'), agent=None, initial_smiles=INITIAL)
    from moldesign.select.pool import Candidate
    assert thinker.rec.acquire('qc', 1)
    thinker.in_flight['task-1'] = [Candidate('CCO', 'initial', source='initial')]
    result = Result(inputs=(('CCO',), {}), method='compute_atomization_energy',
                    task_info=thinker._info(Candidate('CCO', 'initial')))
    result.task_id = 'task-1'
    result.set_result(None)
    result.success = False
    counted_at_sync = []
    sync = store.sync

    def watched_sync():
        counted_at_sync.append('CCO' in thinker.db.entries)
        sync()
    store.sync = watched_sync
    thinker._process_results([result])
    assert thinker.rec.available_slots('qc') == PARAMS['qc_workers'] + PARAMS['qc_prefetch']  # Slot freed
    assert [r['smiles'] for r in _molecules(store)] == ['CCO']  # Written (to the operating system)
    assert 'CCO' not in thinker.db.entries and not thinker.finished()  # Not counted before the sync
    assert thinker.sync_results() == 1
    assert counted_at_sync == [False] and 'CCO' in thinker.db.entries
    store.close()


@pytest.mark.slow
def test_verification_lane(tmp_path):
    """Molecules entering the top K are recomputed at the higher level; the final top K are all verified"""
    thinker, store = _run_thinker(tmp_path, agent=DQNAgent(seed=1), search_size=4,
                                  verify_qc='pyscf/hf/sto-3g//xtb', verify_top=2)
    assert not thinker.errors
    records = read_jsonl(store.path(SIMULATION_RECORDS))[0]
    references = [r for r in records if r['phase'] == 'reference']
    assert sorted((r['qc_spec'], r['element']) for r in references) == sorted(
        (spec, e) for spec in ('xtb', 'pyscf/hf/sto-3g//xtb') for e in 'HCNOF')
    verify = [r for r in records if r['phase'] == 'verify']
    search = [r for r in records if r.get('smiles') and r['phase'] != 'verify']
    assert verify and len({r['smiles'] for r in verify}) == len(verify)  # Each molecule verified once
    top2 = [s for _, s in sorted((r['objective'], r['smiles']) for r in search if r['success'])[:2]]
    assert set(top2) <= {r['smiles'] for r in verify}
    for r in verify:
        assert r['qc_spec'] == 'pyscf/hf/sto-3g//xtb' and r['evaluation'] is None
        assert r['success'] and r['search_objective'] is not None and r['objective'] != r['search_objective']
        assert r['value']['method'] == 'hf'
    # The answer is the best of every verified molecule: one verified while in the top K and pushed out later by
    # the search level may still be the best at the verification level (HF and GFN2 need not agree on the order)
    assert thinker.db.best_verified() == min((r['objective'], r['smiles']) for r in verify)
    assert [r['evaluation'] for r in search] == list(range(1, len(search) + 1))  # Verification is not counted


@pytest.mark.parametrize('interleave,search_size', [(True, 32), (False, 32), (True, 12)])
def test_the_thinker_ranks_small_batches_until_the_first_screening_comes_back(tmp_path, interleave, search_size):
    """No idle start: the initial population dispensed and no screening back yet, the thinker ranks neighbours"""
    store = RunStore(tmp_path / 'run')
    thinker = MoleculeDesignThinker(ThreadSafePipeQueues(topics=TOPICS), store,
                                    RunParams(**{**PARAMS, 'interleave': interleave, 'search_size': search_size}),
                                    get_spec('xtb'), agent=None,
                                    initial_smiles=INITIAL)
    for i, (smiles, value) in enumerate([('CCO', -800.), ('CCCC', -1200.), ('OCCO', -950.)]):
        thinker.db.add({'smiles': smiles, 'success': True, 'phase': 'initial', 'evaluation': i + 1,
                        'objective': value, 'value': {'atomization_energy': value}})
    thinker.pool.add_initial(['C#N', 'FC(F)(F)F', 'CC(C)O'])

    def batch():
        thinker._maybe_bootstrap()
        out = []
        while (c := thinker.pool.pop('steered')) is not None:
            out.append(c)
            thinker.n_steered_submitted += 1  # As the consumer does when it submits a steered molecule
        return out
    assert batch() == []  # Three initial molecules still to be dispensed: more than the two QC slots hold
    thinker.pool.pop('initial')
    first = batch()  # Two left: ranked now, so that the batch is ready when they are done
    if not interleave:  # The batch baseline stands for the original application: it waits for the screening
        assert first == [] and thinker.model is None
        store.close()
        return
    assert all(c.source == 'neighbours' and c.lane == 'steered' for c in first)
    assert {c.smiles for c in first}.isdisjoint({'CCO', 'CCCC', 'OCCO', 'C#N'}) and thinker.model is not None
    second = batch()  # The next best molecules not expanded yet (here the third)
    assert len(first) == 4  # Two per QC slot (more than an eighth of the budget)
    assert second and {c.smiles for c in second}.isdisjoint({c.smiles for c in first})
    if search_size == 12:
        assert len(second) == 4
        thinker._bootstrapped.clear()
        assert len(batch()) == 4  # The rest of the budget: QC does not wait for the ML workers
        assert batch() == []  # Budget spent
        store.close()
        return
    thinker.batches_done = BOOTSTRAP_SCREENINGS  # Two screenings came back, stale or not: the ML workers rank now
    assert batch() == []
    thinker.batches_done = 0
    thinker._fresh = True  # A screening as fresh as the thinker's batches came back: the ML workers rank from now on
    assert batch() == []
    store.close()


def test_the_first_ml_tasks_wait_for_the_warm_up_and_the_screening_goes_first(tmp_path):
    """A screening queued while the ML workers start would rank with the model of the first two results"""
    store = RunStore(tmp_path / 'run')
    thinker = MoleculeDesignThinker(ThreadSafePipeQueues(topics=TOPICS), store, RunParams(**PARAMS), get_spec('xtb'),
                                    agent=DQNAgent(seed=1), initial_smiles=INITIAL)
    for i, (smiles, value) in enumerate([('CCO', -800.), ('CCCC', -1200.)]):
        thinker.db.add({'smiles': smiles, 'success': True, 'phase': 'initial', 'evaluation': i + 1,
                        'objective': value, 'value': {'atomization_energy': value}})
    thinker._maybe_bootstrap()  # The thinker's own batch gives a model, with which MolDQN could start
    assert thinker.model is not None
    thinker._maybe_screen()
    thinker._maybe_generate()
    assert thinker._screening is None and thinker._generating is None  # No ML worker has answered yet
    thinker.first_result['ml'] = time.monotonic()  # The warm-up came back
    thinker._maybe_generate()
    assert thinker._generating is None  # Not before the first screening
    thinker._maybe_screen()
    assert thinker._screening is not None
    tasks = []  # Read as a task server would: a request bigger than the pipe's buffer (MolDQN's agent) waits for it
    reader = threading.Thread(target=lambda: tasks.extend(thinker.queues.get_task(timeout=30)[1].method
                                                          for _ in range(2)), daemon=True)
    reader.start()
    thinker._maybe_generate()
    assert thinker._generating is not None
    reader.join(30)
    assert tasks == ['rank_candidates', 'generate_molecules']
    store.close()


@pytest.mark.parametrize('verified,n_queued', [((-700., -900.), 1), ((-1000., -940.), 0)])
def test_molecules_estimated_best_at_the_verification_level_are_verified_too(tmp_path, verified, n_queued):
    """With verification learning, the K best by the search's value corrected toward the verified values are
    verified, whatever their rank by the search's value; verified molecules better than every estimate keep
    the others out"""
    from moldesign.score.model import train_steering_model
    from moldesign.steer.generator import ESTIMATE_POOL
    store = RunStore(tmp_path / 'run')
    spec = get_spec('pyscf/hf/sto-3g//xtb')
    thinker = MoleculeDesignThinker(ThreadSafePipeQueues(topics=TOPICS), store,
                                    RunParams(**{**PARAMS, 'qc_workers': 2, 'verify_top': 2, 'verify_share': 0.5}),
                                    get_spec('xtb'), agent=None, initial_smiles=INITIAL, verify_spec=spec)
    thinker.references[spec.name] = {e: -1. for e in 'HCNOF'}  # Verification on (its reference energies known)
    search = {'OCCO': -1000., 'CCO': -950., 'CC(C)O': -920., 'CCCC': -900., 'CC': -700.}
    for i, (smiles, value) in enumerate(search.items()):
        thinker.db.add({'smiles': smiles, 'success': True, 'phase': 'initial', 'evaluation': i + 1,
                        'objective': value, 'value': {'atomization_energy': value}})
    for smiles, value in zip(['OCCO', 'CCO'], verified):  # The search's best two, verified
        thinker.db.add_verified(smiles, {'success': True, 'objective': value, 'value': {'atomization_energy': value}})
    unverified = ['CC(C)O', 'CCCC', 'CC']
    assert thinker.db.verification_candidates(ESTIMATE_POOL)[0] == [(s, search[s]) for s in unverified]
    model = train_steering_model(list(search.items()), verified=thinker.db.verified_deltas())
    thinker._verify_estimated_best(model)

    estimates = {s: search[s] + d for s, d in zip(unverified, model.delta.predict(unverified))}
    top2 = sorted([(v, s) for v, s in zip(verified, ['OCCO', 'CCO'])] + [(v, s) for s, v in estimates.items()])[:2]
    expected = {s for _, s in top2 if s in unverified}
    assert len(expected) == n_queued and thinker.estimated_top == expected
    queued = []
    while candidates := thinker._next_candidates():  # The verification lane goes before the search (budget left)
        assert candidates[0].lane == 'verify' and thinker._info(candidates[0])['qc_spec'] == spec.name
        queued.append(candidates[0].smiles)
        thinker.verify_in_flight = 0  # As when its result came back
    assert set(queued) == expected
    store.close()


def test_a_dry_queue_is_refilled_from_the_pool_before_the_search_counts_as_exhausted(tmp_path):
    """Neighbours only: every best molecule's neighbourhood ranked, the batches' limit left candidates in the pool
    (a run used to end there with budget left, as if interrupted)"""
    store = RunStore(tmp_path / 'run')
    thinker = MoleculeDesignThinker(ThreadSafePipeQueues(topics=TOPICS), store,
                                    RunParams(**{**PARAMS, 'search_size': 40, 'sources': ['neighbours']}),
                                    get_spec('xtb'), agent=None, initial_smiles=INITIAL)
    for i, (smiles, value) in enumerate([('CCO', -800.), ('CCCC', -1200.), ('OCCO', -950.)]):
        thinker.db.add({'smiles': smiles, 'success': True, 'phase': 'initial', 'evaluation': i + 1,
                        'objective': value, 'value': {'atomization_energy': value}})
    taken = []

    def batch():
        thinker._maybe_bootstrap()
        out = []
        while (c := thinker.pool.pop('steered')) is not None:
            out.append(c.smiles)
            thinker.n_steered_submitted += 1
        taken.extend(out)
        return out
    while len(thinker._bootstrapped or ()) < 3:  # The neighbourhoods of the three molecules computed
        assert batch()
    assert len(thinker.pool) > 0 and not thinker._exhausted()  # What the limit left out, a re-rank would queue
    before = set(thinker.pool.to_screen())
    refill = batch()
    assert refill and set(refill) <= before and len(set(taken)) == len(taken)
    assert not thinker._exhausted()
    thinker._empty_rankings = 2  # Two rankings in a row queued nothing: nothing more will come of the pool
    assert thinker._exhausted()
    store.close()
