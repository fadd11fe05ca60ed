"""The Colmena thinker that interleaves quantum chemistry with reinforcement learning.

Two agents share one :class:`MoleculeDesignThinker`:

- the **task consumer** (QC results on topic ``simulator``) computes the atom reference energies, the
  initial population, then keeps ``parallel_guesses`` QC workers busy (plus ``qc_prefetch`` tasks
  waiting at the workers), taking the next molecule from the priority queue each time a result returns. Each result goes to disk at once and
  into the result dictionary shared with the generator.
- the **task generator** (ML results on topic ``ML``) trains the group-contribution model on a
  snapshot of every computed molecule, runs MolDQN (``generate_molecules``) with the model as reward,
  screens the candidates (``compute_score``), selects greedily and pushes the selection into the
  priority queue as a new batch; again and again. While MolDQN runs, it adds
  the one- and two-edit neighbourhoods of the best molecules computed so far to the candidate pool,
  and each time new QC results have arrived it refits the model (a fraction of a second) and re-ranks
  the whole pool into the queue, alternating MolDQN's candidates with the neighbourhoods', so the QC
  workers always take the molecules the newest model thinks best and the queue never runs dry.

Stops when ``search_size`` steered molecules are evaluated, when asked to (:meth:`request_stop`,
e.g. on Ctrl-C), or when an agent fails; in-flight QC tasks are drained for a bounded time.
"""
from __future__ import annotations

import logging
import pickle
import itertools
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
from colmena.exceptions import TimeoutException
from colmena.models import Result
from colmena.queue.base import ColmenaQueues
from colmena.thinker import BaseThinker, agent

from moldesign.report.progress import ProgressReporter, ProgressState
from moldesign.report.report import qc_utilization
from moldesign.sample import neighbourhood
from moldesign.score import compute_score, train_model
from moldesign.select import greedy_selection
from moldesign.simulate.base import QCSpec, SPIN_MULTIPLICITY
from moldesign.steer.queue import Candidate, CandidateQueue
from moldesign.store import RL_RECORDS, SCREENING_RECORDS, SIMULATION_RECORDS, RunStore

logger = logging.getLogger(__name__)

ELEMENTS = tuple(SPIN_MULTIPLICITY)
"""Elements whose isolated-atom energies are needed"""

NEIGHBOR_DEPTH = (2, 2, 1, 1, 1, 1, 1, 1)
"""Candidates also include the molecules two edits away from the 2 best molecules and one edit away from the
next 6: random exploration rarely makes the two specific edits that improve a good molecule (cut an O, add a C)"""

_TIME_KEYS = ('running', 'serialize_inputs', 'deserialize_inputs', 'serialize_results', 'deserialize_results')


class RunAborted(RuntimeError):
    """The campaign could not go on (reference energies failed, the generator failed repeatedly, ...)"""


def result_to_record(result: Result, **fields) -> Dict[str, Any]:
    """The common part of a record line: identity, success, timings and worker of a Colmena result

    Args:
        result: A completed Colmena result
        fields: Extra fields of the record
    Returns:
        Record (strict-JSON conversion happens when it is written)
    """
    record = {
        'task_id': result.task_id,
        'method': result.method,
        'success': bool(result.success),
        **fields,
        'failure_info': result.failure_info.model_dump() if result.failure_info is not None else None,
        'task_info': result.task_info,
        'timestamp': result.timestamp.model_dump(),
        'time': {k: getattr(result.time, k) for k in _TIME_KEYS},
        'worker_info': result.worker_info.model_dump() if result.worker_info is not None else None,
        'retries': result.retries,
    }
    return record


def failure_message(result: Result) -> str:
    """One-line reason of a failed task"""
    if result.failure_info is None:
        return 'unknown failure'
    return result.failure_info.exception.strip().splitlines()[-1] if result.failure_info.exception else 'unknown failure'


class MoleculeDesignThinker(BaseThinker):
    """Steers QC towards the molecules a continually retrained model predicts best

    Args:
        queues: Colmena queues (client side) with topics ``simulator`` and ``ML``
        store: Where records are written
        qc_spec: QC specification passed to the QC tasks
        objective: Record field to minimise: ``atomization_energy`` or ``atomization_energy_per_atom``
        search_size: Number of steered molecules to evaluate with QC
        initial_smiles: Initial population (canonical SMILES), computed before steering
        parallel_guesses: Number of QC workers (slots) to keep busy
        batch_size: Molecules the generator enqueues per batch (more than ``parallel_guesses``)
        rl_episodes: MolDQN episodes per generator call
        agent: MolDQN agent (updated and carried across generator calls)
        rl_options: Extra keyword arguments of ``generate_molecules`` (e.g. ``max_steps``)
        reference_energies: Atom reference energies already known (restart), Hartree
        previous_records: Simulation records of an earlier part of this run (restart)
        start_batch: Number of the next generator batch (restart)
        seed: Random seed of the RL agent calls
        progress: Live progress display
        shutdown_timeout: Seconds to wait for in-flight QC tasks after a stop request
        qc_max_retries: Colmena retries of a failed QC task (0: failures are recorded, not retried)
        interleave: Run the generator while QC runs (the application). False gives the batch baseline of
            the benchmarks: the generator waits until its previous selection is evaluated (QC idles during ML)
        qc_prefetch: QC tasks submitted beyond one per worker (default: ``parallel_guesses``, i.e. one
            waiting at each worker), so a worker starts its next molecule as soon as it finishes instead of
            idling for the result's round trip through Parsl, Colmena and this thinker. The price: a
            prefetched molecule was chosen one QC result earlier. 0 submits only when a worker is free.
    """

    def __init__(self,
                 queues: ColmenaQueues,
                 store: RunStore,
                 qc_spec: QCSpec,
                 objective: str,
                 search_size: int,
                 initial_smiles: List[str],
                 parallel_guesses: int,
                 batch_size: int,
                 rl_episodes: int,
                 agent: Any,
                 rl_options: Optional[Dict[str, Any]] = None,
                 reference_energies: Optional[Dict[str, float]] = None,
                 previous_records: Iterable[dict] = (),
                 start_batch: int = 0,
                 seed: int = 0,
                 progress: Optional[ProgressReporter] = None,
                 shutdown_timeout: float = 60.,
                 qc_max_retries: int = 0,
                 interleave: bool = True,
                 qc_prefetch: Optional[int] = None):
        super().__init__(queues, daemon=True)
        if qc_prefetch is not None and qc_prefetch < 0:
            raise ValueError(f'qc_prefetch must be >= 0, got {qc_prefetch}')
        self.interleave = interleave
        self.store = store
        self.qc_spec = qc_spec
        self.objective = objective
        self.search_size = search_size
        self.parallel_guesses = parallel_guesses
        self.qc_prefetch = parallel_guesses if qc_prefetch is None else qc_prefetch
        self.max_in_flight = parallel_guesses + self.qc_prefetch
        self.batch_size = batch_size
        self.rl_episodes = rl_episodes
        self.agent_state = agent
        self.rl_options = dict(rl_options or {})
        self.reference_energies: Dict[str, float] = dict(reference_energies or {})
        self.seed = seed
        self.progress = progress or ProgressReporter(enabled=False)
        self.shutdown_timeout = shutdown_timeout
        self.qc_max_retries = qc_max_retries

        # Shared state: the result dictionary and the priority queue
        self.lock = threading.RLock()
        self.database: Dict[str, Dict[str, Any]] = {}  # SMILES -> {success, objective, atomization_energy, ...}
        self.records: List[dict] = []  # Simulation records of molecules (this run and earlier parts)
        self.queue = CandidateQueue()
        self.in_flight: Dict[str, Candidate] = {}  # SMILES -> candidate being computed
        self.n_steered_submitted = 0
        self.n_steered_done = 0
        self.n_evaluations = 0
        self.n_failed = 0
        self.batch = start_batch
        self.batches_done = 0
        self.pool: Dict[str, None] = {}  # Every candidate the generator found and QC has not computed
        self.neighbours: set = set()  # The pool's candidates that came from neighbourhoods of the best molecules
        self.expanded: Dict[str, int] = {}  # Molecule -> depth of the neighbourhood already added to the pool
        self.reranks = 0
        self.queue_ran_dry = 0  # Times a steered QC slot was free, budget left, and the queue held nothing new
        self._fit_evaluations = 0  # Number of QC results the last model was fit on

        # Control
        self.stop_requested = threading.Event()  # Set on Ctrl-C/SIGTERM
        self.aborted = threading.Event()  # Set when no result can come any more (task server died)
        self.initial_done = threading.Event()  # Set when the initial population is submitted (generator may start)
        self.errors: List[BaseException] = []
        self.lost_in_flight: List[str] = []  # Molecules still computing when the drain timed out

        for record in previous_records:
            self._remember(record, restored=True)
        self.initial_smiles = [s for s in dict.fromkeys(initial_smiles) if s not in self.database]

    # ------------------------------------------------------------------ shared state
    def _remember(self, record: dict, restored: bool = False) -> None:
        """Add a molecule's simulation record to the result dictionary

        Args:
            record: Simulation record of a molecule
            restored: Whether the record comes from an earlier part of the run (restart)
        """
        smiles = record['smiles']
        value = record.get('value') or {}
        with self.lock:
            self.records.append(record)
            self.database[smiles] = {
                'success': record['success'],
                'objective': record.get('objective'),
                'atomization_energy': value.get('atomization_energy'),
                'evaluation': record.get('evaluation'),
                'phase': record.get('phase'),
                'batch': record.get('batch'),
            }
            self.n_evaluations = max(self.n_evaluations, record.get('evaluation') or 0)
            if not record['success']:
                self.n_failed += 1
            if record.get('phase') == 'steered':
                self.n_steered_done += 1
                if restored:
                    self.n_steered_submitted += 1

    def best(self, n: int = 1) -> List[tuple]:
        """The best molecules computed so far: list of (objective, SMILES)"""
        with self.lock:
            done = [(v['objective'], s) for s, v in self.database.items() if v['success'] and v['objective'] is not None]
        return sorted(done)[:n]

    def progress_state(self, phase: str) -> ProgressState:
        """Counts for the progress display"""
        best = self.best(1)
        with self.lock:
            utilization = qc_utilization(self.records, self.parallel_guesses) if self.n_steered_done else None
            return ProgressState(
                evaluated=self.n_steered_done, target=self.search_size, failed=self.n_failed,
                in_flight=len(self.in_flight), queue_depth=len(self.queue), batches=self.batches_done,
                best_smiles=best[0][1] if best else None, best_value=best[0][0] if best else None,
                utilization=utilization, objective=self.objective, phase=phase)

    def request_stop(self) -> None:
        """Stop submitting new work; drain what is running (called from a signal handler)"""
        self.stop_requested.set()

    def abort(self, reason: str) -> None:
        """Stop at once without waiting for in-flight tasks (their results cannot arrive)"""
        self.errors.append(RunAborted(reason))
        self.aborted.set()
        self.done.set()

    @property
    def stopping(self) -> bool:
        return self.stop_requested.is_set() or self.done.is_set()

    def _wait_for_result(self, topic: str, while_waiting: Optional[Callable[[], None]] = None) -> Optional[Result]:
        """Wait for a result of a topic, giving up (None) when the run is stopping

        Args:
            topic: Topic of the result
            while_waiting: Called about every quarter second while no result has arrived
        """
        while not self.stopping:
            try:
                return self.queues.get_result(topic=topic, timeout=0.25)
            except TimeoutException:
                if while_waiting is not None:
                    while_waiting()
        return None

    def _training_set(self) -> List[tuple]:
        """Every successfully computed molecule: (SMILES, atomization energy in kcal/mol)"""
        with self.lock:
            self._fit_evaluations = self.n_evaluations
            return [(s, v['atomization_energy']) for s, v in self.database.items()
                    if v['success'] and v['atomization_energy'] is not None]

    def _expand_best(self) -> int:
        """Add the neighbourhoods of the best molecules not expanded yet to the candidate pool

        Returns:
            Number of new candidates
        """
        added = 0
        for (_, smiles), depth in zip(self.best(len(NEIGHBOR_DEPTH)), NEIGHBOR_DEPTH):
            if self.expanded.get(smiles, 0) >= depth:
                continue
            self.expanded[smiles] = depth
            found = neighbourhood(smiles, depth)
            with self.lock:
                new = [m for m in found if m not in self.database and m not in self.in_flight and m not in self.pool]
                self.pool.update(dict.fromkeys(new))
                self.neighbours.update(new)
            added += len(new)
        return added

    def _select(self, pool: List[str], mean: np.ndarray, exclude: Iterable[str], n: int) -> List[str]:
        """Best ``n`` of the pool, alternating MolDQN's candidates and the neighbourhoods' (best first)"""
        is_neighbour = np.array([m in self.neighbours for m in pool], dtype=bool)
        chosen = []
        for part in (~is_neighbour, is_neighbour):
            chosen.append(greedy_selection([m for m, p in zip(pool, part) if p], mean[part], n, exclude=exclude))
        merged = [m for pair in itertools.zip_longest(*chosen) for m in pair if m is not None]
        return merged[:n]

    def _rerank(self) -> None:
        """Expand the best molecules, refit the model if new QC results arrived, re-rank every known candidate"""
        if len(self.best(2)) < 2:
            return  # Too few results to fit a model
        added = self._expand_best()
        if self.batches_done == 0:
            return  # Steering starts with MolDQN's first batch (the model is still poor); the neighbourhoods wait
        if not self.pool or (self.n_evaluations == self._fit_evaluations and not added):
            return
        train = self._training_set()
        model = train_model([s for s, _ in train], [v for _, v in train])
        with self.lock:
            exclude = set(self.database) | set(self.in_flight)
            for smiles in exclude.intersection(self.pool):
                del self.pool[smiles]
                self.neighbours.discard(smiles)
            pool = list(self.pool)
        if not pool:
            return
        mean, std = compute_score(model, pool, self.objective)
        # The whole pool, ranked, becomes the queue: it cannot run dry before the next re-rank
        chosen = self._select(pool, mean, exclude, n=len(pool))
        lookup = dict(zip(pool, zip(mean.tolist(), std.tolist())))
        batch = self.batch - 1  # The newest batch: re-ranked candidates keep the queue's "most recent first"
        self.queue.replace([Candidate(s, batch=batch, rank=i, predicted=lookup[s][0], predicted_std=lookup[s][1])
                            for i, s in enumerate(chosen)])
        self.reranks += 1
        self.logger.info(f'Re-ranked {len(pool)} candidates ({len(self.neighbours)} from neighbourhoods of the best) '
                         f'with a model fit on {len(train)} molecules; best predicted {chosen[0]} '
                         f'{lookup[chosen[0]][0]:.1f} kcal/mol' if chosen else 'Re-ranked: no candidate left')

    # ------------------------------------------------------------------ task consumer
    @agent
    def consumer(self):
        """Task consumer: reference energies, initial population, then keep the QC workers busy"""
        try:
            self._compute_reference_energies()
            self.queue.push_batch([Candidate(s, batch=-1, rank=i, phase='initial') for i, s in enumerate(self.initial_smiles)])
            if not self.initial_smiles:
                self.initial_done.set()
            self._run_qc_loop()
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.progress.update(self.progress_state('done'))

    def _compute_reference_energies(self) -> None:
        """Compute the isolated-atom energies that are not known yet"""
        missing = [e for e in ELEMENTS if e not in self.reference_energies]
        if not missing:
            return
        self.logger.info(f'Computing reference energies of {", ".join(missing)} with {self.qc_spec.name}')
        for element in missing:
            self.queues.send_inputs(element, self.qc_spec, method='compute_reference_energy', topic='simulator',
                                    keep_inputs=False, task_info={'element': element, 'phase': 'reference'},
                                    max_retries=self.qc_max_retries)
        failures = []
        for _ in missing:
            result = self._wait_for_result('simulator')
            if result is None:
                raise RunAborted('Stopped while computing reference energies')
            element = result.task_info['element']
            self.store.append(SIMULATION_RECORDS, result_to_record(
                result, smiles=None, element=element, phase='reference', evaluation=None, batch=None, rank=None,
                predicted=None, predicted_std=None, objective=None,
                value={'element': element, 'energy': result.value} if result.success else None))
            if result.success:
                self.reference_energies[element] = float(result.value)
                self.logger.info(f'Reference energy of {element}: {result.value:.6f} Ha')
            else:
                failures.append(f'{element}: {failure_message(result)}')
        if failures:
            raise RunAborted('Reference energy computation failed, cannot compute atomization energies: ' + '; '.join(failures))
        self.store.write_json('reference_energies.json', self.reference_energies)

    def _budget_left(self) -> int:
        with self.lock:
            return self.search_size - self.n_steered_submitted

    def _submit_next(self) -> bool:
        """Submit the best queued molecule to QC, if the budget allows

        Returns:
            Whether a task was submitted
        """
        while True:
            candidate = self.queue.pop(timeout=0)
            if candidate is None:
                return False
            with self.lock:
                if candidate.smiles in self.database or candidate.smiles in self.in_flight:
                    continue  # Already computed or computing: never twice
                if candidate.phase == 'steered':
                    if self.n_steered_submitted >= self.search_size:
                        self.queue.push(candidate)  # Budget spent: leave it queued
                        return False
                    self.n_steered_submitted += 1
                self.in_flight[candidate.smiles] = candidate
            self.queues.send_inputs(
                candidate.smiles, self.qc_spec, self.reference_energies,
                method='compute_atomization_energy', topic='simulator', keep_inputs=False,
                max_retries=self.qc_max_retries,
                task_info={'smiles': candidate.smiles, 'batch': candidate.batch, 'rank': candidate.rank,
                           'predicted': candidate.predicted, 'predicted_std': candidate.predicted_std,
                           'phase': candidate.phase})
            return True

    def _finished(self) -> bool:
        with self.lock:
            return self.n_steered_done >= self.search_size and not self.in_flight

    def _run_qc_loop(self) -> None:
        """Keep ``parallel_guesses + qc_prefetch`` QC tasks in flight until the budget is spent or a stop is requested"""
        drain_deadline = None
        was_dry = False
        while True:
            if not self.stopping:
                while len(self.in_flight) < self.max_in_flight and self._submit_next():
                    pass
                dry = (len(self.in_flight) < self.max_in_flight and self.batches_done > 0
                       and self._budget_left() > 0)
                if dry and not was_dry:
                    self.queue_ran_dry += 1
                    self.logger.info('The queue ran dry: a QC slot waits for the generator')
                was_dry = dry
                if not self.initial_done.is_set() and not any(c.phase == 'initial' for c in self.queue.snapshot()):
                    self.initial_done.set()  # Every initial molecule is submitted: the generator may start
            elif drain_deadline is None:
                drain_deadline = time.monotonic() + self.shutdown_timeout
                self.logger.info(f'Stopping: waiting up to {self.shutdown_timeout:.0f} s for '
                                 f'{len(self.in_flight)} QC task(s) in flight')

            if self._finished():
                self.logger.info(f'Evaluated {self.n_steered_done} steered molecules: search complete')
                return
            if not self.in_flight:
                if self.stopping:
                    return
                if self.n_steered_submitted >= self.search_size:
                    return  # Budget spent (can happen if queued molecules were all duplicates)
            if self.aborted.is_set() or (drain_deadline is not None and time.monotonic() > drain_deadline):
                self.lost_in_flight = list(self.in_flight)
                self.logger.warning(f'Gave up waiting for {len(self.lost_in_flight)} QC task(s): '
                                    f'{", ".join(self.lost_in_flight)} (they will be recomputed on restart)')
                return

            # Short waits while a slot is free, so a new batch is picked up at once
            free = len(self.in_flight) < self.max_in_flight and not self.stopping
            try:
                result = self.queues.get_result(topic='simulator', timeout=0.02 if free else 0.5)
            except TimeoutException:
                continue
            self._process_qc_result(result)

    def record_late_result(self, result: Result) -> None:
        """Write a QC result that arrives after the consumer stopped (while the task server shuts down)

        Only call once the thinker has ended. Other results (ML) are dropped.
        """
        smiles = (result.task_info or {}).get('smiles')
        if result.method != 'compute_atomization_energy' or smiles not in self.in_flight:
            return
        self._process_qc_result(result)
        if smiles in self.lost_in_flight:
            self.lost_in_flight.remove(smiles)
        self.logger.info(f'Wrote the late QC result of {smiles}')

    def _process_qc_result(self, result: Result) -> None:
        """Store a QC result: record on disk, result dictionary, counters, progress"""
        info = result.task_info
        smiles = info['smiles']
        with self.lock:
            self.n_evaluations += 1
            evaluation = self.n_evaluations
            self.in_flight.pop(smiles, None)
        value = None
        objective = None
        if result.success:
            value = result.value.model_dump(mode='json') if hasattr(result.value, 'model_dump') else dict(result.value)
            objective = value[self.objective]
        else:
            self.logger.warning(f'QC failed for {smiles}: {failure_message(result)}')
        record = result_to_record(
            result, smiles=smiles, element=None, phase=info['phase'], evaluation=evaluation,
            batch=info.get('batch'), rank=info.get('rank'), predicted=info.get('predicted'),
            predicted_std=info.get('predicted_std'), objective=objective, value=value)
        self.store.append(SIMULATION_RECORDS, record)  # On disk before anything else
        self._remember(record)
        self.progress.update(self.progress_state('steered' if info['phase'] == 'steered' else 'initial'))

    # ------------------------------------------------------------------ task generator
    @agent(startup=True)  # Its normal end (budget spent) must not stop the consumer
    def generator(self):
        """Task generator: train, generate with MolDQN, screen, select, enqueue; over and over"""
        try:
            self._run_generator()
        except BaseException as exc:
            self.errors.append(exc)
            raise

    def _run_generator(self) -> None:
        while not self.initial_done.wait(timeout=0.5):
            if self.stopping:
                return
        consecutive_failures = 0
        while not self.stopping and self._budget_left() > 0:
            if not self.interleave and (len(self.queue) or self.in_flight):
                time.sleep(0.01)  # Batch baseline: wait until the previous selection is evaluated
                continue
            train = self._training_set()
            if len(train) < 2:
                # Wait for data (the initial population is still running)
                if not self.in_flight and not len(self.queue):
                    raise RunAborted(f'Only {len(train)} molecule(s) computed successfully: too few to train a model')
                time.sleep(0.5)
                continue
            batch = self.batch
            model = train_model([s for s, _ in train], [v for _, v in train])
            best = [s for _, s in self.best(8)] + ['']  # Edit the best molecules, and also build from nothing

            # Generate candidates with reinforcement learning
            self.queues.send_inputs(
                self.agent_state, model, self.rl_episodes, method='generate_molecules', topic='ML', keep_inputs=False,
                input_kwargs={'objective': self.objective, 'init_smiles': best, 'seed': self.seed + batch,
                              **self.rl_options},
                task_info={'batch': batch, 'n_train': len(train)})
            # While MolDQN runs, keep the queue ranked by the newest model (not in the batch baseline)
            result = self._wait_for_result('ML', while_waiting=self._rerank if self.interleave else None)
            if result is None:
                return
            candidates = result.value[0] if result.success else []
            self.store.append(RL_RECORDS, result_to_record(result, batch=batch, n_candidates=len(candidates),
                                                           episodes=self.rl_episodes))
            if not result.success:
                consecutive_failures += 1
                self.logger.error(f'generate_molecules failed (batch {batch}): {failure_message(result)}')
                if consecutive_failures >= 3:
                    raise RunAborted(f'generate_molecules failed 3 times in a row; last: {failure_message(result)}')
                continue
            self.agent_state = result.value[1]
            self._save_agent()

            # Screen the new candidates with the model and select greedily
            with self.lock:
                exclude = set(self.database) | set(self.in_flight)
            candidates = [s for s in candidates if s not in exclude]
            if not candidates:
                self.logger.warning(f'Batch {batch}: the agent produced no new molecule')
                self.batch += 1
                continue
            self.queues.send_inputs(model, candidates, method='compute_score', topic='ML', keep_inputs=False,
                                    input_kwargs={'objective': self.objective}, task_info={'batch': batch})
            result = self._wait_for_result('ML')
            if result is None:
                return
            selected = []
            if result.success:
                mean, std = result.value
                with self.lock:
                    exclude = set(self.database) | set(self.in_flight)
                chosen = greedy_selection(candidates, mean, self.batch_size, exclude=exclude)
                lookup = {s: (float(m), float(d)) for s, m, d in zip(candidates, mean, std)}
                selected = [Candidate(s, batch=batch, rank=i, predicted=lookup[s][0], predicted_std=lookup[s][1])
                            for i, s in enumerate(chosen)]
                self.queue.push_batch(selected)
                with self.lock:
                    self.pool.update(dict.fromkeys(s for s in candidates if s not in exclude))
                    while len(self.pool) > 20000:  # Bound the memory of very long runs: forget the oldest
                        oldest = next(iter(self.pool))
                        del self.pool[oldest]
                        self.neighbours.discard(oldest)
                consecutive_failures = 0
                self.batches_done += 1
                self.logger.info(f'Batch {batch}: {len(candidates)} new candidates, enqueued {len(selected)}; '
                                 f'best predicted {selected[0].smiles} {selected[0].predicted:.1f} kcal/mol'
                                 if selected else f'Batch {batch}: nothing selected')
            else:
                consecutive_failures += 1
                self.logger.error(f'compute_score failed (batch {batch}): {failure_message(result)}')
                if consecutive_failures >= 3:
                    raise RunAborted(f'compute_score failed 3 times in a row; last: {failure_message(result)}')
            self.store.append(SCREENING_RECORDS, result_to_record(
                result, batch=batch, n_candidates=len(candidates), n_selected=len(selected), n_train=len(train),
                selected=[{'smiles': c.smiles, 'predicted': c.predicted, 'predicted_std': c.predicted_std,
                           'rank': c.rank} for c in selected]))
            self.batch += 1
            self.progress.update(self.progress_state('steered'))

    def _save_agent(self) -> None:
        """Keep the latest agent (weights and schedule) for a restart"""
        path = self.store.path('agent.pkl')
        tmp = path.with_suffix('.tmp')
        with tmp.open('wb') as fp:
            pickle.dump(self.agent_state, fp)
        tmp.replace(path)
