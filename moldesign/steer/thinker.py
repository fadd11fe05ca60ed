"""The Colmena thinker: task plumbing between the candidate pool, the result dictionary and the workers.

Four agents share one :class:`MoleculeDesignThinker`:

- **consumer** (QC results, topic ``simulator``): computes the reference energies of the atoms, queues the initial
  population, then handles each QC result in constant time: record written, slot released.
- **syncer**: syncs the records the consumer wrote, a group at a time (one disk sync), and only then lets their
  results count: result dictionary, best molecules queued for verification, progress. The consumer never waits
  for the disk, and no result counts (or is reported) before its record is on disk.
- **submit_qc** (a Colmena ``task_submitter`` on the ``qc`` slots: workers plus prefetched tasks): takes the next
  molecule(s) from the :class:`~moldesign.select.pool.CandidatePool` (initial population, then verification
  within its share of QC time, then the search) and submits it.
- **steer** (ML results, topic ``ML``): the task generator. It submits the screening task
  (:func:`~moldesign.select.ranking.rank_candidates`: model fit, neighbourhoods of the best, predictions) whenever
  new results or candidates call for it, and MolDQN (``generate_molecules``, with the newest model as reward)
  again and again; the pool turns each screening into the queue's next batch.

Stops when ``search_size`` steered molecules (and the verification of the best) are done, when asked to
(:meth:`request_stop`, e.g. on Ctrl-C: in-flight QC tasks are drained for a bounded time), or on an abort.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from colmena.exceptions import TimeoutException
from colmena.models import Result
from colmena.queue.base import ColmenaQueues
from colmena.thinker import BaseThinker, agent, task_submitter
from colmena.thinker.resources import ResourceCounter

from moldesign.report.progress import ProgressReporter, ProgressState
from moldesign.select.pool import Candidate, CandidatePool
from moldesign.simulate.base import SPIN_MULTIPLICITY, QCSpec
from moldesign.steer.generator import GeneratorAgent, RunAborted, WorkersFailed
from moldesign.steer.params import RunParams
from moldesign.steer.records import failure_message, molecule_record, startup_failure, task_record
from moldesign.steer.results import ResultDatabase
from moldesign.store import REFERENCE_ENERGIES, SIMULATION_RECORDS, DiskFullError, \
    RunStore

logger = logging.getLogger(__name__)

ELEMENTS = tuple(SPIN_MULTIPLICITY)
"""Elements whose isolated-atom energies are needed"""
__all__ = ['MoleculeDesignThinker', 'RunAborted', 'WorkersFailed']


class MoleculeDesignThinker(GeneratorAgent, BaseThinker):
    """Steers QC towards the molecules a continually retrained model predicts best (see the module docstring)

    Args:
        queues: Colmena queues (client side) with topics ``simulator`` and ``ML``
        store: The run directory
        params: The campaign's parameters
        qc_spec: QC specification of the search
        agent: MolDQN agent (carried across generator calls)
        initial_smiles: Initial population (canonical SMILES)
        verify_spec: Higher-level QC specification that verifies the best molecules (None: no verification)
        reference_energies: Atom energies already known (restart): spec name -> element -> Hartree
        previous: Molecule records of an earlier part of this run (restart)
        start_batch: Number of the next screening batch (restart)
        progress: Live progress display
        shutdown_timeout: Seconds to wait for in-flight QC tasks after a stop request
    """

    def __init__(self, queues: ColmenaQueues, store: RunStore, params: RunParams, qc_spec: QCSpec, agent: Any,
                 initial_smiles: Sequence[str], verify_spec: Optional[QCSpec] = None,
                 reference_energies: Optional[Dict[str, Dict[str, float]]] = None, previous: Sequence[dict] = (),
                 start_batch: int = 0, progress: Optional[ProgressReporter] = None, shutdown_timeout: float = 60.):
        slots = params.qc_workers + params.qc_prefetch
        counter = ResourceCounter(slots, ['qc'])
        counter.reallocate(None, 'qc', slots)
        # Colmena's own lines (agents starting, slots acquired: two per task) go under colmena's logger
        super().__init__(queues, resource_counter=counter, daemon=True, logger_name=f'colmena.{__name__}')
        self.store, self.params, self.qc_spec, self.verify_spec = store, params, qc_spec, verify_spec
        self.agent_state = agent
        self.progress = progress or ProgressReporter(enabled=False)
        self.shutdown_timeout = shutdown_timeout
        self.references: Dict[str, Dict[str, float]] = {k: dict(v) for k, v in (reference_energies or {}).items()}

        self.db = ResultDatabase(params.objective, params.qc_workers)
        self.pool = CandidatePool(params.queue_policy, params.batch_size, params.acquisition, start_batch=start_batch,
                                  unranked_fallback=params.interleave)
        self.lock = threading.Lock()
        self.in_flight: Dict[str, List[Candidate]] = {}  # Colmena task id -> molecules
        self.n_steered_submitted = 0
        self.verify_in_flight = 0
        self.geometries: Dict[str, str] = {}  # Relaxed XYZ of the molecules queued for verification
        self.model = None  # Newest surrogate model (from the last screening)
        self.batches_done = self.reranks = self.queue_ran_dry = 0
        self._evaluations = itertools.count(1)
        self._ml_failures = {'generate_molecules': 0, 'rank_candidates': 0}

        self.first_result: Dict[str, Optional[float]] = {'qc': None, 'ml': None}  # When each executor answered
        self.qc_seconds: Optional[float] = None  # Moving average of a search molecule's QC time (s, per worker)

        self.stop_requested = threading.Event()
        self.aborted = threading.Event()
        self.ready = threading.Event()  # Reference energies known: QC submission may start
        self.steering_done = threading.Event()
        self.errors: List[BaseException] = []
        self.lost_in_flight: List[str] = []
        self._unsynced: List[dict] = []  # Records written by the consumer, not yet synced (see syncer)
        self._unsynced_cond = threading.Condition()
        self._sync_lock = threading.Lock()

        search = [r for r in previous if r.get('phase') != 'verify']
        verified = [r for r in previous if r.get('phase') == 'verify']
        for record in search:
            entered = self.db.add(record)
            self.n_steered_submitted += record.get('phase') == 'steered'
            if entered and record.get('success'):
                self.geometries[record['smiles']] = record['value']['xyz']
        for record in verified:
            self.db.add_verified(record['smiles'], record)
        self._evaluations = itertools.count(self.db.n_evaluations + 1)
        self.pool.mark_taken([r['smiles'] for r in search], [r['smiles'] for r in verified])
        if verify_spec is not None:  # The best molecules of an earlier part of the run may still need verifying
            for _, smiles in self.db.best(params.verify_top):
                if self.db.entries[smiles].verified is None:
                    self.pool.push_verify(smiles)
        self.initial_smiles = [s for s in dict.fromkeys(initial_smiles) if s not in self.db]

    # ------------------------------------------------------------------ control
    def request_stop(self) -> None:
        """Stop submitting new work; drain what is running (called from a signal handler)"""
        self.stop_requested.set()

    def abort(self, reason: str, kind: type = RunAborted) -> None:
        """Stop at once without waiting for in-flight tasks (their results cannot arrive)"""
        self.errors.append(kind(reason))
        self.aborted.set()
        self.done.set()

    @property
    def stopping(self) -> bool:
        return self.stop_requested.is_set() or self.done.is_set()

    def _budget_left(self) -> int:
        with self.lock:
            return self.params.search_size - self.n_steered_submitted

    def _verifying(self) -> bool:
        """Whether verification is on and its reference energies are known"""
        return self.verify_spec is not None and self.params.verify_top > 0 and \
            len(self.references.get(self.verify_spec.name, {})) == len(ELEMENTS)

    def finished(self) -> bool:
        """Whether the campaign's work is done: budget spent (or nothing left to try), best molecules verified"""
        with self.lock:
            if self.in_flight:
                return False
        if self._unsynced or self._sync_lock.locked():  # In this order: the syncer locks before it takes a group
            return False  # Results not in the dictionary yet
        if self._verifying() and self.pool.depth('verify'):
            return False
        search_over = self.db.n_steered >= self.params.search_size or \
            (self.steering_done.is_set() and not self.pool.depth('steered') and not self.pool.depth('initial'))
        return search_over and self.ready.is_set() and not self.pool.depth('initial')

    # ------------------------------------------------------------------ task consumer
    @agent
    def consumer(self):
        """Reference energies, initial population, then every QC result until the campaign is done"""
        try:
            if self.params.interleave:  # Fresh ML workers load the screening's libraries while QC starts
                for _ in range(self.params.ml_workers):
                    self.queues.send_inputs(method='warm_up', topic='ML', keep_inputs=False)
            if self._compute_reference_energies():
                self.pool.add_initial(self.initial_smiles)
                self.ready.set()
                self._consume()
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.progress.update(self.progress_state('done'))

    def _compute_reference_energies(self) -> bool:
        """Compute the missing isolated-atom energies of the search's method (the verification's are not awaited)

        Returns:
            Whether they are known (False: stopped meanwhile)
        """
        specs = [s for s in (self.qc_spec, self.verify_spec if self.params.verify_top else None) if s is not None]
        waiting = 0
        for spec in specs:
            missing = [e for e in ELEMENTS if e not in self.references.get(spec.name, {})]
            if missing:
                logger.info(f'Computing reference energies of {", ".join(missing)} with {spec.name}')
            for element in missing:
                self.queues.send_inputs(element, spec, method='compute_reference_energy', topic='simulator',
                                        keep_inputs=False, max_retries=self.params.qc_retries,
                                        task_info={'element': element, 'phase': 'reference', 'qc_spec': spec.name})
                waiting += spec is self.qc_spec
        self.progress.update(self.progress_state('reference'))
        while len(self.references.get(self.qc_spec.name, {})) < len(ELEMENTS):
            if self.stopping:
                return False
            try:
                self._process_results([self.queues.get_result(topic='simulator', timeout=0.1)])
            except TimeoutException:
                continue
        return True

    def _consume(self) -> None:
        """Handle QC results until the campaign is done, or drained after a stop request"""
        deadline = None
        while not self.aborted.is_set():
            if self.finished():
                if self.stop_requested.is_set():
                    logger.info(f'Stopped after {self.db.n_steered} steered molecules; nothing was in flight')
                else:
                    logger.info(f'Evaluated {self.db.n_steered} steered molecules: campaign complete')
                return
            if self.stop_requested.is_set():
                if deadline is None:
                    deadline = time.monotonic() + self.shutdown_timeout
                    logger.info(f'Stopping: waiting up to {self.shutdown_timeout:.0f} s for '
                                     f'{len(self.in_flight)} QC task(s) in flight')
                if not self.in_flight:
                    return
                if time.monotonic() > deadline:
                    self.lost_in_flight = [c.smiles for cs in self.in_flight.values() for c in cs]
                    logger.warning(f'Gave up waiting for {len(self.lost_in_flight)} QC molecule(s): '
                                        f'{", ".join(self.lost_in_flight)} (they will be computed on restart)')
                    return
            results = []
            try:
                results.append(self.queues.get_result(topic='simulator', timeout=0.1))
                while len(results) < 256:  # Whatever else has arrived: one disk sync for all of them
                    results.append(self.queues.get_result(topic='simulator', timeout=0))
            except TimeoutException:
                pass
            if results:
                self._process_results(results)

    def _process_results(self, results: List[Result]) -> None:
        """Write QC results to disk, free their QC slots, and hand them to the ``syncer`` agent

        The records are written to the operating system (they survive a crash of this process) and the slots are
        released at once, so the next tasks go out without waiting for the disk; the ``syncer`` syncs each group
        and only then do the results count (dictionary, steering, verification, progress).
        """
        if self.first_result['qc'] is None:
            self.first_result['qc'] = time.monotonic()
        done, slots = [], 0
        try:
            for result in results:
                slots += result.method != 'compute_reference_energy'
                self._time_qc(result)
                for record in self._records(result):
                    self.store.append(SIMULATION_RECORDS, record, sync=False)
                    done.append(record)
        except DiskFullError as exc:
            logger.error(f'{exc}: stopping (every record written so far is complete)')
            self.abort(str(exc))
            return
        if slots:
            self.rec.release('qc', slots)
        with self._unsynced_cond:
            self._unsynced.extend(done)
            self._unsynced_cond.notify()

    def _time_qc(self, result: Result) -> None:
        """Update the moving average of a search molecule's QC time (the first batches are sized by it)"""
        items = result.task_info.get('bundle') or [result.task_info]
        if result.method == 'compute_reference_energy' or not result.success or result.time.running is None or \
                any(item.get('phase') == 'verify' for item in items):
            return
        seconds = result.time.running / len(items)
        self.qc_seconds = seconds if self.qc_seconds is None else 0.8 * self.qc_seconds + 0.2 * seconds

    @agent(startup=True)  # Ends after the consumer, once everything written is synced
    def syncer(self):
        """Sync the records the consumer wrote, in groups (one disk sync each), then let their results count"""
        try:
            while True:
                with self._unsynced_cond:
                    if not self._unsynced:
                        if self.done.is_set():
                            return
                        self._unsynced_cond.wait(0.05)
                self.sync_results()
        except BaseException as exc:
            self.errors.append(exc)
            self.done.set()
            raise

    def sync_results(self) -> int:
        """Sync the records written so far and put their results in the dictionary

        Returns:
            Number of records synced
        """
        with self._sync_lock:  # One sync at a time: records count in the order they were written
            with self._unsynced_cond:
                done, self._unsynced = self._unsynced, []
            if not done:
                return 0
            try:
                self.store.sync()
            except DiskFullError as exc:
                logger.error(f'{exc}: stopping (every record synced so far is complete)')
                self.abort(str(exc))
                return 0
            for record in done:
                self._remember(record)
        self.progress.update(self.progress_state())
        return len(done)

    def _records(self, result: Result) -> List[dict]:
        """The records of one QC result (one per molecule; a reference atom's energy also updates the references)"""
        info = result.task_info or {}
        reason = None if result.success else startup_failure(result)
        if reason is not None and not self.aborted.is_set():
            self.abort(f'the {"ml" if result.topic == "ML" else "qc"} workers could not start: {reason}', WorkersFailed)
        if result.method == 'compute_reference_energy':
            element, spec = info['element'], info['qc_spec']
            if result.success:
                self.references.setdefault(spec, {})[element] = float(result.value)
            else:
                self._reference_failed(spec, element, failure_message(result))
            if len(self.references.get(spec, {})) == len(ELEMENTS):
                self.store.write_json(REFERENCE_ENERGIES, self.references)
            return [task_record(result, smiles=None, element=element, phase='reference', qc_spec=spec,
                                value={'element': element, 'energy': result.value} if result.success else None)]
        with self.lock:
            molecules = self.in_flight.pop(result.task_id, [])
            self.verify_in_flight -= bool(molecules) and molecules[0].lane == 'verify'
        if not result.success:
            logger.warning(f'QC failed for {", ".join(c.smiles for c in molecules)}: {failure_message(result)}')
        values = result.value if result.success and len(molecules) > 1 else [result.value] * len(molecules)
        records = []
        for candidate, value in zip(molecules, values):
            error = value if isinstance(value, str) else None
            value = value.model_dump(mode='json') if hasattr(value, 'model_dump') and result.success else None
            verify = candidate.lane == 'verify'
            evaluation = None if verify else next(self._evaluations)
            entry = self.db.entries.get(candidate.smiles)
            extra = {'search_objective': entry.objective if entry else None} if verify else {}
            records.append(molecule_record(result, self._info(candidate), value, self.params.objective, evaluation,
                                           error, **extra))
        return records

    def _reference_failed(self, spec: str, element: str, message: str) -> None:
        if self.aborted.is_set():
            return
        text = f'Reference energy of {element} with {spec} failed: {message}'
        if spec == self.qc_spec.name:
            self.abort(text + '; no atomization energy can be computed (try another method, basis or keywords)')
        else:
            logger.error(text + '; verification is off for this run')
            self.verify_spec = None

    def _remember(self, record: dict) -> None:
        """Put a molecule's record into the dictionary and release its slot"""
        if record['phase'] == 'reference':
            return
        if record['phase'] == 'verify':
            self.db.add_verified(record['smiles'], record)
            return
        entered = self.db.add(record)
        if entered and self._verifying() and (self.db.rank_of(record['smiles']) or 0) < self.params.verify_top:
            self.geometries[record['smiles']] = record['value']['xyz']
            self.pool.push_verify(record['smiles'])

    def record_late_result(self, result: Result) -> None:
        """Write a QC result that arrives after the consumer stopped (while the task server shuts down)"""
        if result.method == 'compute_atomization_energy' and result.task_id in self.in_flight:
            smiles = [c.smiles for c in self.in_flight[result.task_id]]
            self._process_results([result])
            self.sync_results()  # The syncer has ended
            self.lost_in_flight = [s for s in self.lost_in_flight if s not in smiles]
            logger.info(f'Wrote the late QC result of {", ".join(smiles)}')

    # ------------------------------------------------------------------ QC submission
    @task_submitter(task_type='qc')
    def submit_qc(self):
        """Fill one QC slot with the next molecule(s) of the pool; hold the slot until there is one"""
        dry = False
        while not self.done.is_set():
            if self.stop_requested.is_set():
                self.done.wait()
                break
            candidates = self._next_candidates() if self.ready.is_set() else []
            if candidates:
                self._submit(candidates)
                return
            if not dry and self.batches_done and self._budget_left() > 0:
                dry = True
                self.queue_ran_dry += 1
            self.pool.wait(0.05)
        self.rec.release('qc', 1)

    def _next_candidates(self) -> List[Candidate]:
        """Initial population first, then verification within its share of QC time, then the search"""
        size = self.params.qc_bundle
        found: List[Candidate] = []
        while len(found) < size and (c := self.pool.pop('initial')) is not None:
            found.append(c)
        if found:
            return found
        if self._verify_allowed():
            while (c := self.pool.pop('verify')) is not None:
                rank = self.db.rank_of(c.smiles)  # Verify it if it is still among the best, or estimated so
                if rank is not None and rank < self.params.verify_top or c.smiles in self.estimated_top:
                    return [c]
        with self.lock:
            size = min(size, self.params.search_size - self.n_steered_submitted)
            while len(found) < size and (c := self.pool.pop('steered')) is not None:
                found.append(c)
            self.n_steered_submitted += len(found)
        return found

    def _verify_allowed(self) -> bool:
        """Verification takes at most ``verify_share`` of the QC workers while the search runs, all of them after

        With one QC worker the share is no worker: a verification (minutes of DFT) would stall a search of
        sub-second tasks, so it waits for the search to end.
        """
        if not self._verifying() or not self.pool.depth('verify'):
            return False
        if self._budget_left() <= 0 or self.steering_done.is_set():
            return True
        return self.verify_in_flight < int(self.params.verify_share * self.params.qc_workers)

    def _submit(self, candidates: List[Candidate]) -> None:
        lane = candidates[0].lane
        if lane == 'verify':
            spec, refs = self.verify_spec, self.references[self.verify_spec.name]
            args = (candidates[0].smiles, spec, refs)
            kwargs = {'xyz': self.geometries.get(candidates[0].smiles)}
        else:
            spec, refs = self.qc_spec, self.references[self.qc_spec.name]
            args, kwargs = ((candidates[0].smiles if len(candidates) == 1 else [c.smiles for c in candidates]),
                            spec, refs), {}
        method = 'compute_atomization_energies' if len(candidates) > 1 else 'compute_atomization_energy'
        info = self._info(candidates[0]) if len(candidates) == 1 else {'bundle': [self._info(c) for c in candidates]}
        with self.lock:
            task_id = self.queues.send_inputs(*args, method=method, topic='simulator', keep_inputs=False,
                                              input_kwargs=kwargs, max_retries=self.params.qc_retries,
                                              task_info=info)
            self.in_flight[task_id] = candidates
            self.verify_in_flight += lane == 'verify'

    def _info(self, candidate: Candidate) -> Dict[str, Any]:
        spec = self.verify_spec if candidate.lane == 'verify' and self.verify_spec else self.qc_spec
        phase = 'verify' if candidate.lane == 'verify' else candidate.lane
        return {'smiles': candidate.smiles, 'phase': phase, 'batch': candidate.batch, 'rank': candidate.rank,
                'predicted': candidate.predicted, 'predicted_std': candidate.predicted_std,
                'source': candidate.source, 'qc_spec': spec.name}

    def silent_executors(self) -> Dict[str, Optional[float]]:
        """When each executor first answered (None: not yet); ML is expected only once QC has answered"""
        return {'qc': self.first_result['qc']} if self.first_result['qc'] is None else dict(self.first_result)

    # ------------------------------------------------------------------ progress
    def progress_state(self, phase: Optional[str] = None) -> ProgressState:
        """Counts for the progress display (cheap: no pass over the records)

        Args:
            phase: The phase (default: 'stopping' after a stop request, else 'initial' until the initial population
                is computed, 'verify' while the best are verified after the search, else 'steered')
        """
        best = self.db.best(1)
        db, params = self.db, self.params
        verify_left = self.pool.depth('verify') + self.verify_in_flight if self._verifying() else 0
        if phase is None:
            phase = 'stopping' if self.stop_requested.is_set() else \
                'initial' if db.n_initial < params.initial_count and not db.n_steered else \
                'verify' if db.n_steered >= params.search_size and verify_left else 'steered'
        totals = {'reference': (len(self.references.get(self.qc_spec.name, {})), len(ELEMENTS)),
                  'initial': (db.n_initial, params.initial_count),
                  'verify': (db.n_verified, db.n_verified + verify_left)}
        done, total = totals.get(phase, (db.n_steered, params.search_size))
        verified = db.best_verified() or (None, None)
        return ProgressState(phase=phase, done=done, total=total, evaluated=db.n_steered,
                             target=params.search_size, failed=db.n_failed, in_flight=len(self.in_flight),
                             queue_depth=self.pool.depth('steered'), batches=self.batches_done,
                             best_smiles=best[0][1] if best else None, best_value=best[0][0] if best else None,
                             utilization=db.utilization(), objective=params.objective,
                             verified_smiles=verified[1], verified_value=verified[0])
