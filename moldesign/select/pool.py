"""The candidate pool: every molecule the search may compute next, and the order in which it is dispensed.

A :class:`CandidatePool` (ExaMol's ``Selector``, here) owns the selection policy of a campaign:

- **lanes**: ``initial`` (the initial population, in order, first), ``verify`` (best molecules to recompute at a
  higher level; the thinker decides when this lane may be used), ``steered`` (the search);
- **sources** of search candidates: MolDQN's molecules (``moldqn``) and the one/two-edit neighbourhoods of the
  best molecules computed so far (``neighbours``; :meth:`expansions` says which best molecules to expand);
- **ranking**: a :class:`~moldesign.select.ranking.Ranking` from the screening task becomes a batch of the
  priority queue; the ranked candidates alternate between sources (best first within each), so neither source
  starves the other;
- **queue policy**: ``recency`` (the original application's): the most recent batch first, best rank within it,
  older batches as the fallback; each batch holds the best ``batch_size`` candidates of its screening.
  ``rerank``: every screening re-ranks the whole pool with the newest model and the ranked pool becomes the queue;
- **likely failures last**: candidates the screening's feasibility classifier gives less than
  :data:`~moldesign.select.ranking.LIKELY_SUCCESS` chance of QC success (strained cages that cannot be embedded
  or fall apart in the relaxation) come after every other candidate of their batch, whatever their predicted
  value: QC is not spent on them while likelier molecules are left;
- **no dry queue**: when every ranked candidate is dispensed and the next screening has not come back, the newest
  unranked candidate (MolDQN's latest molecules, newest first) goes to QC rather than QC waiting for the screening
  (``unranked_fallback``; off in the batch baseline, which waits by design);
- **exclusion**: a molecule dispensed once (computed, in flight, or failed) is never dispensed again, nor is a
  candidate the screening could not embed in 3D.

Thread-safe; no queues or tasks here (the thinker does the plumbing), so it is unit-tested directly.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from moldesign.select.acquisition import acquisition_scores
from moldesign.select.ranking import LIKELY_SUCCESS, Ranking

logger = logging.getLogger(__name__)

NEIGHBOR_DEPTH = (2, 2, 1, 1, 1, 1, 1, 1)
"""Candidates include the molecules two edits away from the 2 best molecules and one edit away from the next 6:
random exploration rarely makes the two specific edits that improve a good molecule (cut an O, add a C)"""
LANES = ('initial', 'verify', 'steered')


@dataclass
class Candidate:
    """A molecule dispensed for QC"""

    smiles: str
    lane: str = 'steered'
    """``initial``, ``verify`` or ``steered``"""
    batch: Optional[int] = None
    """Screening batch that ranked it (None for the initial population)"""
    rank: Optional[int] = None
    """Its rank within the batch (0: best)"""
    predicted: Optional[float] = None
    """Model's prediction of the objective when it was ranked"""
    predicted_std: Optional[float] = None
    source: Optional[str] = None
    """``moldqn``, ``neighbours``, ``initial``, or ``search`` for verification"""


class CandidatePool:
    """Candidates of a campaign and the order in which they are dispensed (see the module docstring)

    Args:
        policy: ``rerank`` or ``recency``
        batch_size: Candidates a ``recency`` batch holds
        acquisition: ``greedy``, ``ucb`` or ``ei`` (see :mod:`moldesign.select.acquisition`)
        max_size: Candidates kept; the oldest are forgotten beyond it (bounds the memory of long runs)
        start_batch: Number of the first batch (a restarted run continues its numbering)
        unranked_fallback: Dispense unranked candidates when no ranked one is left (see the module docstring)
    """

    def __init__(self, policy: str = 'rerank', batch_size: int = 64, acquisition: str = 'greedy',
                 max_size: int = 20000, start_batch: int = 0, unranked_fallback: bool = False):
        if policy not in ('rerank', 'recency'):
            raise ValueError(f'Unknown queue policy {policy!r}: rerank or recency')
        self.policy = policy
        self.batch_size = batch_size
        self.acquisition = acquisition
        self.max_size = max_size
        self.next_batch = start_batch
        self.unranked_fallback = unranked_fallback
        self.n_unranked_dispensed = 0
        self._cond = threading.Condition()
        self._taken: set = set()  # Dispensed once (or computed before a restart): never again
        self._taken_order: List[str] = []  # Dispensed molecules, in order (what a ranking must leave out)
        self._initial: Deque[str] = deque()
        self._verify: Deque[str] = deque()
        self._verify_seen: set = set()
        self._heap: List[Tuple[Tuple[int, int], int, str]] = []
        self._queued: Dict[str, Candidate] = {}  # The live queue entry of each molecule
        self._pool: Dict[str, str] = {}  # Every candidate not dispensed -> source (insertion order: oldest first)
        self._unranked: Dict[str, str] = {}  # Candidates no screening has seen yet
        self._expanded: Dict[str, int] = {}  # Molecule -> depth of the neighbourhood already enumerated
        self._embeddable: set = set()  # Candidates a screening found embeddable in 3D
        self.infeasible: set = set()  # Candidates that cannot be embedded: never dispensed
        self._counter = itertools.count()

    # ------------------------------------------------------------------ adding
    def add_initial(self, smiles: Iterable[str]) -> int:
        """Queue the initial population (dispensed first, in order, not counted as search)

        Returns:
            Number of molecules queued (those dispensed before are skipped)
        """
        with self._cond:
            new = [s for s in dict.fromkeys(smiles) if s not in self._taken]
            self._initial.extend(new)
            self._cond.notify_all()
            return len(new)

    def add(self, smiles: Iterable[str], source: str) -> int:
        """Add unranked candidates to the pool (they join the queue at the next screening)

        Returns:
            Number of new candidates
        """
        with self._cond:
            new = [s for s in smiles if s not in self._taken and s not in self._pool]
            for s in new:
                self._pool[s] = source
                self._unranked[s] = source
            self._forget_oldest()
            return len(new)

    def push_verify(self, smiles: str) -> bool:
        """Queue a molecule for verification at a higher level (each molecule once)

        Returns:
            Whether it was queued
        """
        with self._cond:
            if smiles in self._verify_seen:
                return False
            self._verify_seen.add(smiles)
            self._verify.append(smiles)
            self._cond.notify_all()
            return True

    def mark_taken(self, smiles: Iterable[str], verified: Iterable[str] = ()) -> None:
        """Exclude molecules computed elsewhere (e.g. by an earlier part of a restarted run)"""
        with self._cond:
            for s in smiles:
                self._taken.add(s)
                self._pool.pop(s, None)
                self._unranked.pop(s, None)
            self._verify_seen.update(verified)

    # ------------------------------------------------------------------ screening
    def expansions(self, best: Sequence[str], depths: Sequence[int] = NEIGHBOR_DEPTH, mark: bool = True
                   ) -> Dict[str, int]:
        """Which of the best molecules need their neighbourhoods enumerated (marked as done)

        Args:
            best: The best molecules computed so far, best first
            depths: Neighbourhood depth for the best, second best, ...
            mark: Mark them as done (the caller enumerates them); False only asks
        Returns:
            Molecule -> depth, for those not yet expanded to that depth
        """
        with self._cond:
            todo = {s: d for s, d in zip(best, depths) if self._expanded.get(s, 0) < d}
            if mark:
                self._expanded.update(todo)
            return todo

    def forget_expansions(self, expanded: Dict[str, int]) -> None:
        """Undo :meth:`expansions` (the screening that was to enumerate them failed)"""
        with self._cond:
            for s in expanded:
                self._expanded.pop(s, None)

    def to_screen(self) -> Dict[str, str]:
        """The candidates the next screening should predict: the whole pool (``rerank``) or the unranked ones"""
        with self._cond:
            return dict(self._pool) if self.policy == 'rerank' else dict(self._unranked)

    def embeddable(self, smiles: Iterable[str]) -> List[str]:
        """Those of the molecules that a screening already found embeddable (they need no new check)"""
        with self._cond:
            return [s for s in smiles if s in self._embeddable]

    @property
    def has_unranked(self) -> bool:
        """Whether candidates wait for a screening"""
        with self._cond:
            return bool(self._unranked)

    def apply_ranking(self, ranking: Ranking, best: Optional[float] = None, limit: Optional[int] = None
                      ) -> List[Candidate]:
        """Turn a screening's predictions into the next batch of the queue

        The new order is built without holding the pool's lock (20,000 candidates take a few hundred ms), so
        the QC submitter never waits for it; molecules dispensed meanwhile are left out when it is installed.

        Args:
            ranking: Predictions of the screening task
            best: Best objective value so far (for the ``ei`` acquisition)
            limit: Queue at most this many (the others join the pool, ranked, for the next screening)
        Returns:
            The candidates queued, in queue order (all of them share the new batch number)
        """
        scores = acquisition_scores(ranking.mean, ranking.std, self.acquisition, best)
        with self._cond:
            self._embeddable.update(ranking.feasible)
            self.infeasible.update(ranking.infeasible)
            self._taken.update(ranking.infeasible)
            for smiles in ranking.infeasible:
                self._pool.pop(smiles, None)
            for smiles in ranking.smiles:  # Ranked, even those dropped below (else the baseline screens forever)
                self._unranked.pop(smiles, None)
            batch = self.next_batch
            if ranking.smiles:
                self.next_batch += 1
            mark = len(self._taken_order)
        finite = np.isfinite(scores).tolist()
        taken, pool = self._taken, self._pool  # Read without the lock: what is taken meanwhile is left out below
        live = [i for i, s in enumerate(ranking.smiles) if finite[i] and s not in taken]
        likely_fail = np.zeros(len(scores), dtype=bool) if ranking.success is None else ranking.success < LIKELY_SUCCESS
        order = _alternate([ranking.sources[i] for i in live], scores[live], likely_fail[live])
        chosen = [live[j] for j in order]
        if self.policy == 'recency':
            chosen = chosen[:self.batch_size]
        if limit is not None:
            chosen = chosen[:limit]
        means, stds = ranking.mean.tolist(), ranking.std.tolist()
        queued = [Candidate(ranking.smiles[i], 'steered', batch, rank, means[i], stds[i], ranking.sources[i])
                  for rank, i in enumerate(chosen)]
        entries = [((-batch, c.rank), next(self._counter), c.smiles) for c in queued]  # In order: a heap already
        ranked = {ranking.smiles[i]: ranking.sources[i] for i in live}
        new = {s: source for s, source in ranked.items() if s not in pool}
        by_smiles = {c.smiles: c for c in queued}
        with self._cond:
            gone = set(self._taken_order[mark:])  # Dispensed while the order was built
            for smiles, source in new.items():
                if smiles not in gone:
                    self._pool.setdefault(smiles, source)
            if self.policy == 'recency':
                for candidate, entry in zip(queued, entries):
                    if candidate.smiles not in gone:
                        self._queued[candidate.smiles] = candidate
                        self._heap.append(entry)
                heapq.heapify(self._heap)
            else:  # The whole pool, ranked, becomes the queue: it cannot run dry before the next re-rank
                for smiles in gone:
                    by_smiles.pop(smiles, None)
                self._heap, self._queued = entries, by_smiles  # pop() skips the entries of molecules now gone
            self._forget_oldest()
            self._cond.notify_all()
        return [c for c in queued if c.smiles not in gone] if gone else queued

    def _forget_oldest(self) -> None:
        while len(self._pool) > self.max_size:
            oldest = next(iter(self._pool))
            del self._pool[oldest]
            self._unranked.pop(oldest, None)

    # ------------------------------------------------------------------ dispensing
    def pop(self, lane: str) -> Optional[Candidate]:
        """Take the next molecule of a lane (it is never dispensed again)

        Args:
            lane: ``initial``, ``verify`` or ``steered``
        Returns:
            The candidate, None if the lane is empty
        """
        with self._cond:
            if lane == 'initial':
                while self._initial:
                    smiles = self._initial.popleft()
                    if smiles not in self._taken:
                        self._take(smiles)
                        return Candidate(smiles, 'initial', source='initial')
                return None
            if lane == 'verify':
                return Candidate(self._verify.popleft(), 'verify', source='search') if self._verify else None
            while self._heap:
                _, _, smiles = heapq.heappop(self._heap)
                candidate = self._queued.pop(smiles, None)
                if candidate is not None and smiles not in self._taken:
                    self._take(smiles)
                    return candidate
            if self.unranked_fallback and self._unranked:
                smiles, source = self._unranked.popitem()  # The newest
                self._take(smiles)
                self.n_unranked_dispensed += 1
                return Candidate(smiles, 'steered', source=source)
            return None

    def _take(self, smiles: str) -> None:
        self._taken.add(smiles)
        self._taken_order.append(smiles)
        self._pool.pop(smiles, None)
        self._unranked.pop(smiles, None)

    def wait(self, timeout: float) -> None:
        """Wait until something is added to a lane, or ``timeout`` seconds"""
        with self._cond:
            self._cond.wait(timeout)

    def depth(self, lane: str = 'steered') -> int:
        """Molecules waiting in a lane"""
        with self._cond:
            return {'initial': len(self._initial), 'verify': len(self._verify), 'steered': len(self._queued)}[lane]

    def __len__(self) -> int:
        """Candidates in the pool (ranked or not)"""
        with self._cond:
            return len(self._pool)

    def snapshot(self, n: Optional[int] = None) -> List[Candidate]:
        """The queued search candidates, in the order they would be dispensed"""
        with self._cond:
            out, seen = [], set()
            for _, _, smiles in sorted(self._heap):
                if smiles in self._queued and smiles not in seen:
                    seen.add(smiles)
                    out.append(self._queued[smiles])
            return out[:n] if n is not None else out


def _alternate(sources: List[str], scores: np.ndarray, last: Optional[np.ndarray] = None) -> List[int]:
    """Indices in queue order: best first within each source, the sources taking turns; those marked ``last``
    (likely QC failures) after all the others, in the same order among themselves"""
    last = np.zeros(len(scores), dtype=bool) if last is None else np.asarray(last, dtype=bool)
    by_tier: Dict[bool, Dict[str, List[int]]] = {False: {}, True: {}}
    for i in np.lexsort((np.arange(len(scores)), scores)):  # Stable: ties keep their order
        by_tier[bool(last[i])].setdefault(sources[i], []).append(int(i))
    order = []
    for by_source in by_tier.values():
        lists = [by_source[s] for s in sorted(by_source)]
        order.extend(i for group in itertools.zip_longest(*lists) for i in group if i is not None)
    return order
