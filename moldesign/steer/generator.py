"""The task generator of the thinker: screening (model fit, neighbourhoods, predictions) and MolDQN, on ``ml``.

:class:`GeneratorAgent` is a part of :class:`~moldesign.steer.thinker.MoleculeDesignThinker` (a mixin: Colmena
finds its agent on the thinker). It is the only reader of topic ``ML``. Its loop:

- submit a screening (:func:`~moldesign.select.ranking.rank_candidates`) when there is something to screen: the
  first model, a new MolDQN batch, new best molecules whose neighbourhoods are not enumerated yet, or (policy
  ``rerank``) at least ``rerank_every`` new results and ``rerank_interval`` seconds since the last one; one at a
  time, so re-ranking keeps pace with the results without queueing up;
- submit MolDQN (``generate_molecules``) with the newest model whenever it is idle and the budget is not spent
  (the batch baseline waits until the previous selection is evaluated);
- hand each result to the pool (:meth:`~moldesign.select.pool.CandidatePool.apply_ranking`, ``add``) and to disk.

No idle start: while no screening has come back (the ML workers are starting, or busy), whenever the queue (the
initial population's last molecules included) is about to run dry, the agent ranks a batch itself: the neighbours of
the two best molecules it has not expanded yet (two edits away from the two best, one from the others, as deep as
the screening goes, which then need not enumerate them again), with the model fit on everything computed so far
(0.2-2.5 s: the :func:`~moldesign.select.ranking.rank_candidates` the ML workers run, on the neighbourhoods of two
molecules), at most two molecules per QC slot or an eighth of the search budget per batch, so that each batch learns
from the results of the one before; QC never waits for the ML workers (on a busy 2-core machine they start at low
priority and answer their warm-up after 20-30 s). Each batch is ranked while every QC slot still has a molecule
queued and the queue still holds what QC computes while the thinker ranks (from the measured ranking and QC times; a
batch then holds at least that many), so QC does not wait for it. The first screening at least as fresh as the
thinker's last batch (fit on as many results), or the second screening, takes over; an older first one, fit on fewer
results than the thinker has seen, only adds its best two molecules per QC slot. Not in the batch baseline
(``interleave=False``), which stands for the original application.

Fresh first screening: the interleaved run submits its first ML task (screening first, then MolDQN) only once an ML
worker has answered its warm-up. A screening carries its training set, so one queued while the ML workers start
would rank with the model of the first two results, and its batch, arriving after the thinker's own batches, would
send the search back to that guess (measured: 19 of 40 steered molecules, strained cages, from a 2-molecule model).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Dict, FrozenSet, Optional, Set, Tuple

from colmena.exceptions import TimeoutException
from colmena.models import Result
from colmena.thinker import agent

from moldesign.score import estimate_verified
from moldesign.select.pool import NEIGHBOR_DEPTH
from moldesign.select.ranking import rank_candidates
from moldesign.steer.records import failure_message, task_record
from moldesign.store import RL_RECORDS, SCREENING_RECORDS

logger = logging.getLogger(__name__)

N_STARTS = 8
"""MolDQN episodes start from the best molecules computed so far (this many) and from the empty molecule"""
MIN_CHECKS, MAX_CHECKS = 32, 256
"""Candidates at the head of the ranking whose 3D embedding a screening tries: twice the QC slots, within these"""
MAX_ML_FAILURES = 3
"""Consecutive failures of an ML method that end the run"""
BOOTSTRAP_STARTS, BOOTSTRAP_CHECKS = 2, 32
"""First batches ranked by the thinker itself: neighbours of this many best molecules; candidates checked (embedding,
learned strain limit) at most, until the batch is full of feasible ones"""
BOOTSTRAP_SLOTS, BOOTSTRAP_BUDGET = 2, 0.125
"""... of which it queues at most this many per QC slot, or this share of the search budget if more: small batches,
each ranked with the results of the one before, rather than the search spent on one early guess"""
BOOTSTRAP_SCREENINGS = 2
"""The thinker's own batches end when the first screening as fresh as its last batch comes back, or this many
screenings: after that the ML workers keep the queue stocked, and the thinker's CPU goes to the results"""
ESTIMATE_POOL = 500
"""The estimate of the verified values covers this many of the best unverified molecules by the search's value
(a cost bound for runs of many thousand molecules; a 48-molecule run estimates every molecule)"""


class RunAborted(RuntimeError):
    """The campaign cannot go on (reference energies failed, the generator failed repeatedly, disk full, ...)"""


class WorkersFailed(RunAborted):
    """The workers could not start (e.g. the scheduler refused the job): a configuration problem"""


class GeneratorAgent:
    """The ``steer`` agent of the thinker (see the module docstring)"""

    _screening: Optional[Tuple[str, Dict[str, int]]] = None  # Task id and expansions of the screening in flight
    _generating: Optional[str] = None  # Task id of the MolDQN call in flight
    _screened_at = 0  # Successful results the last screening's model was fit on
    _last_screening = float('-inf')
    _round = 0
    _bootstrapped: Optional[Set[str]] = None  # Molecules whose neighbours the thinker ranked itself (module docstring)
    _bootstrap_n = 0  # Molecules the model of the thinker's last own batch was fit on
    _rank_seconds: Optional[float] = None  # Average time the thinker takes to rank one of its batches
    _fresh = False  # A screening at least as fresh as the thinker's own batches came back: they are over
    _empty_rankings = 0  # Rankings in a row that queued nothing
    exhausted = False  # The search ended early: no candidate left to try (a complete run, budget not spent)
    estimated_top: FrozenSet[str] = frozenset()  # Unverified molecules estimated among the best verified (K)

    @agent(startup=True)  # Its normal end (budget spent) must not stop the consumer
    def steer(self):
        """Screen and generate candidates, again and again, until the budget is spent"""
        try:
            self._steer()
        except BaseException as exc:
            self.errors.append(exc)
            self.stop_requested.set()  # The consumer drains the QC tasks in flight, then the run ends
            raise
        finally:
            self.steering_done.set()

    def _steer(self) -> None:
        while not self._can_start():
            if self.stopping or self._budget_left() <= 0:
                return
            time.sleep(0.05)
        while not self.stopping:
            self._maybe_screen()
            self._maybe_generate()
            self._maybe_bootstrap()
            if self._budget_left() <= 0 and not self._screening and not self._generating:
                return
            if self._exhausted():
                logger.warning('No candidate is left to try (sources exhausted); the search ends early')
                self.exhausted = True
                return
            try:
                result = self.queues.get_result(topic='ML', timeout=0.05)
            except TimeoutException:
                continue
            self._handle(result)

    def _can_start(self) -> bool:
        """Steering starts as soon as a model can be fit, so the queue is ready when the initial population ends"""
        if not self.ready.is_set():
            return False
        if self.db.n_successes >= 2:
            return True
        if not self.in_flight and not self.pool.depth('initial') and self.db.n_initial >= len(self.initial_smiles):
            raise RunAborted(f'Only {self.db.n_successes} molecule(s) computed successfully: '
                             'too few to train a model')
        return False

    def _exhausted(self) -> bool:
        """Nothing to compute and nothing that could produce candidates (a pool that a re-rank could queue counts)"""
        return ('moldqn' not in self.params.sources and not self._screening and not self.in_flight
                and not self.pool.depth('steered') and not self.pool.has_unranked
                and not self._pool_rerankable()
                and not self.pool.expansions([s for _, s in self.db.best(N_STARTS)], mark=False))

    def _pool_rerankable(self) -> bool:
        """Whether the queue is dry but the pool holds ranked candidates that a re-rank could queue (those a
        batch's limit left out), unless the last two rankings queued nothing"""
        return self.params.queue_policy == 'rerank' and not self.pool.depth('steered') and len(self.pool) > 0 and \
            self._empty_rankings < 2

    @property
    def _qc_slots(self) -> int:
        """Molecules the QC executor holds at once: one computing and the prefetched ones per worker"""
        return self.params.qc_workers + self.params.qc_prefetch

    def _ml_starting(self) -> bool:
        """Whether the interleaved run still waits for the ML workers' warm-up (see the module docstring)"""
        return self.params.interleave and self.first_result['ml'] is None

    def _maybe_screen(self) -> None:
        if self._screening is not None or time.monotonic() - self._last_screening < self.params.rerank_interval \
                or self._ml_starting():
            return
        n_train = self.db.n_successes
        expand = self.pool.expansions([s for _, s in self.db.best(N_STARTS)]) \
            if 'neighbours' in self.params.sources else {}
        rerank = self.params.queue_policy == 'rerank' and len(self.pool) and \
            (n_train - self._screened_at >= self.params.rerank_every or self._pool_rerankable())
        if not (expand or self.pool.has_unranked or rerank or self.model is None):
            return
        training = self.db.training_set()
        candidates = self.pool.to_screen()
        slots = self._qc_slots
        options = {'expand': expand, 'failures': self.db.failures(),
                   'verified': self.db.verified_deltas() if self.params.verify_learn else [],
                   'check_top': min(MAX_CHECKS, max(MIN_CHECKS, 2 * slots)),
                   'checked': self.pool.embeddable(candidates)}
        task_id = self.queues.send_inputs(training, candidates, self.params.objective, input_kwargs=options,
                                          method='rank_candidates', topic='ML', keep_inputs=False,
                                          task_info={'n_train': len(training), 'n_candidates': len(candidates)})
        self._screening = (task_id, expand)
        self._screened_at = len(training)
        self._last_screening = time.monotonic()

    def _maybe_bootstrap(self) -> None:
        """Rank a batch here if QC is about to run out of molecules and no screening has come back yet"""
        slots, ahead = self._qc_slots, self._bootstrap_ahead()
        if self._fresh or self.batches_done >= BOOTSTRAP_SCREENINGS or not self.params.interleave or \
                'neighbours' not in self.params.sources or \
                self.pool.depth('initial') + self.pool.depth('steered') > slots + ahead:
            return  # Ranked while the slots still have a molecule each, and QC will not run dry while it ranks
        left = self._budget_left() - self.pool.depth('steered')
        if left <= 0:
            return
        if self._bootstrapped is None:
            self._bootstrapped = set()
        best = [s for _, s in self.db.best(N_STARTS)]
        todo = [s for s in best if s not in self._bootstrapped][:BOOTSTRAP_STARTS]
        # Every best molecule's neighbours ranked already: the queue is dry, but the pool may hold what the batches'
        # limit left out
        candidates = {} if todo or not self._pool_rerankable() else self.pool.to_screen()
        if not todo and not candidates:
            return
        self._bootstrapped.update(todo)
        # As deep as the screening would go (two edits for the two best): the screening need not enumerate them again
        depth = dict(zip(best, NEIGHBOR_DEPTH))
        marked = self.pool.expansions(todo, [depth[s] for s in todo])
        expand = marked or {s: 1 for s in todo}
        limit = min(max(BOOTSTRAP_SLOTS * slots, int(BOOTSTRAP_BUDGET * self.params.search_size), ahead), left)
        start = time.perf_counter()
        try:
            ranking = rank_candidates(self.db.training_set(), candidates, self.params.objective, expand=expand,
                                      failures=self.db.failures(), check_top=BOOTSTRAP_CHECKS, enough=limit,
                                      checked=self.pool.embeddable(candidates))
        except Exception as exc:  # The ML workers' screening will do
            logger.warning(f'A batch could not be ranked here ({type(exc).__name__}: {exc}); waiting for the '
                           'first screening')
            self.pool.forget_expansions(marked)
            return
        best_value = self.db.best(1)
        queued = self.pool.apply_ranking(ranking, best_value[0][0] if best_value else None, limit=limit)
        self._empty_rankings = 0 if queued else self._empty_rankings + 1
        self._bootstrap_n = ranking.n_train
        elapsed = time.perf_counter() - start
        self._rank_seconds = elapsed if self._rank_seconds is None else 0.5 * (self._rank_seconds + elapsed)
        self.model = ranking.model  # MolDQN may start with it
        what = (f'neighbours of {", ".join(todo)}' if todo else
                f'of {len(candidates)} candidates left in the pool (every best molecule expanded)')
        logger.info(f'Batch ranked by the thinker while the first screening runs: {len(queued)} {what} '
                    f'in {elapsed:.2f} s')

    def _bootstrap_ahead(self) -> int:
        """Molecules QC computes while the thinker ranks a batch (from the measured times of both): the next batch
        is ranked that much earlier, and holds at least that many, so that QC never waits for it"""
        if self._rank_seconds is None or not self.qc_seconds:
            return 0
        return math.ceil(self._rank_seconds / self.qc_seconds * self.params.qc_workers)

    def _maybe_generate(self) -> None:
        if 'moldqn' not in self.params.sources or self._generating or self.model is None or self._budget_left() <= 0 \
                or self._ml_starting() or not self.batches_done and self._screening is None:
            return  # The first screening goes first: on one ML worker MolDQN would hold it up for a whole call
        if not self.params.interleave and (self.pool.depth('steered') or self.in_flight or self._screening
                                           or self.pool.has_unranked):
            return  # Batch baseline: wait until the previous selection is evaluated
        options = {'objective': self.params.objective, 'seed': self.params.seed + self._round,
                   'init_smiles': [s for _, s in self.db.best(N_STARTS)] + ['']}
        if self.params.rl_steps:
            options['max_steps'] = self.params.rl_steps
        self._generating = self.queues.send_inputs(self.agent_state, self.model, self.params.rl_episodes,
                                                   input_kwargs=options, method='generate_molecules', topic='ML',
                                                   keep_inputs=False, task_info={'round': self._round})
        self._round += 1

    def _handle(self, result: Result) -> None:
        """Take an ML result: MolDQN's molecules join the pool; a screening becomes the queue's next batch"""
        if self.first_result['ml'] is None:
            self.first_result['ml'] = time.monotonic()
        if result.method == 'warm_up':
            logger.info(f'ML worker warmed up: {result.value if result.success else failure_message(result)}')
        elif result.method == 'generate_molecules':
            self._generating = None
            molecules = result.value[0] if result.success else []
            self.store.append(RL_RECORDS, task_record(result, round=result.task_info.get('round'),
                                                      n_candidates=len(molecules), episodes=self.params.rl_episodes))
            if self._ml_ok(result):
                self.agent_state = result.value[1]
                self.store.save_agent(self.agent_state)
                added = self.pool.add(molecules, 'moldqn')
                logger.info(f'MolDQN round {result.task_info.get("round")}: {len(molecules)} molecules, '
                                 f'{added} new candidates')
        elif result.method == 'rank_candidates':
            _, expand = self._screening
            self._screening = None
            if not result.success:
                self.pool.forget_expansions(expand)
                self.store.append(SCREENING_RECORDS, task_record(result, batch=None, **result.task_info))
                self._ml_ok(result)
                return
            ranking = result.value
            self.model = ranking.model
            self._verify_estimated_best(ranking.model)
            best = self.db.best(1)
            # A screening older than the thinker's own last batch only adds a few of its best: the thinker goes on
            stale = ranking.n_train < self._bootstrap_n
            self._fresh = self._fresh or not stale
            queued = self.pool.apply_ranking(ranking, best[0][0] if best else None,
                                             limit=BOOTSTRAP_SLOTS * self._qc_slots if stale else None)
            self._empty_rankings = 0 if queued else self._empty_rankings + 1
            self.batches_done += 1
            self.reranks += self.params.queue_policy == 'rerank'
            self.store.append(SCREENING_RECORDS, task_record(
                result, batch=queued[0].batch if queued else None, policy=self.params.queue_policy,
                n_candidates=len(ranking.smiles), n_queued=len(queued), n_train=ranking.n_train,
                expanded=ranking.expanded, timings=ranking.timings, infeasible=ranking.infeasible,
                strain_limit=ranking.strain_limit,
                n_checked=len(ranking.feasible) + len(ranking.infeasible),
                selected=[{'smiles': c.smiles, 'predicted': c.predicted, 'predicted_std': c.predicted_std,
                           'rank': c.rank, 'source': c.source} for c in queued[:16]]))
            self._ml_ok(result)
            if queued:
                logger.info(f'Batch {queued[0].batch}: queued {len(queued)} of {len(ranking.smiles)} candidates '
                                 f'(model fit on {ranking.n_train}); best predicted {queued[0].smiles} '
                                 f'{queued[0].predicted:.1f}')
        self.progress.update(self.progress_state())

    def _verify_estimated_best(self, model: Any) -> None:
        """Queue for verification the molecules the model estimates among the K best at the verification level

        With verification learning, the screening's model corrects the search's values toward the verified ones.
        The molecules it estimates best need not be in the search's own top K (GFN2-xTB ranks first the cages it
        overbinds), yet one of them may be the run's answer: they are verified too (each once, while still among
        the estimated best; verified molecules count with their verified values).

        Args:
            model: The screening's :class:`~moldesign.score.model.SteeringModel`
        """
        if getattr(model, 'delta', None) is None or not self.params.verify_learn or not self._verifying():
            return
        unverified, verified = self.db.verification_candidates(ESTIMATE_POOL)
        if not unverified:
            return
        smiles = [s for s, _ in unverified]
        estimate = estimate_verified(model.delta, smiles, [e for _, e in unverified], self.params.objective)
        best = sorted(verified + list(zip(estimate.tolist(), smiles)))[:self.params.verify_top]
        candidates = set(smiles)
        self.estimated_top = frozenset(s for _, s in best if s in candidates)
        for value, s in best:
            if s in self.estimated_top and self.pool.push_verify(s):
                logger.info(f'Verifying {s}: estimated {value:.1f} at the verification level')

    def _ml_ok(self, result: Result) -> bool:
        """Count consecutive failures of an ML method; the run ends after :data:`MAX_ML_FAILURES`"""
        if result.success:
            self._ml_failures[result.method] = 0
            return True
        self._ml_failures[result.method] += 1
        logger.error(f'{result.method} failed: {failure_message(result)}')
        if self._ml_failures[result.method] >= MAX_ML_FAILURES:
            raise RunAborted(f'{result.method} failed {MAX_ML_FAILURES} times in a row; '
                             f'last: {failure_message(result)}')
        return False
