"""The priority queue of QC candidates shared by the task generator and the task consumer.

Candidates are ordered by recency first (the most recent generator batch wins), then by their
rank within the batch (0 is the model's best). Older batches stay in the queue as a fallback,
so the QC workers never wait for the generator while any candidate is left.
A molecule pushed again by a newer batch takes the newer batch's place.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional

logger = logging.getLogger(__name__)


@dataclass(order=True)
class Candidate:
    """A molecule waiting for QC"""

    sort_key: tuple = field(init=False, repr=False)
    smiles: str = field(compare=False)
    batch: int = field(compare=False)
    rank: int = field(compare=False)
    predicted: Optional[float] = field(default=None, compare=False)
    """Model's prediction of the objective (kcal/mol) when the candidate was selected"""
    predicted_std: Optional[float] = field(default=None, compare=False)
    phase: str = field(default='steered', compare=False)

    def __post_init__(self):
        self.sort_key = (-self.batch, self.rank)


class CandidateQueue:
    """Thread-safe priority queue of :class:`Candidate` keyed by (most recent batch, rank)"""

    def __init__(self):
        self._heap: List[tuple] = []
        self._current: Dict[str, Candidate] = {}  # The live entry for each SMILES
        self._counter = itertools.count()  # Tie breaker keeps insertion order for equal keys
        self._cond = threading.Condition()

    def push(self, candidate: Candidate) -> None:
        """Add a candidate, replacing an older entry for the same molecule"""
        with self._cond:
            self._current[candidate.smiles] = candidate
            heapq.heappush(self._heap, (candidate.sort_key, next(self._counter), candidate))
            self._cond.notify_all()

    def push_batch(self, candidates: List[Candidate]) -> None:
        """Add several candidates at once"""
        with self._cond:
            for candidate in candidates:
                self._current[candidate.smiles] = candidate
                heapq.heappush(self._heap, (candidate.sort_key, next(self._counter), candidate))
            self._cond.notify_all()

    def replace(self, candidates: List[Candidate]) -> None:
        """Replace the whole content of the queue (e.g. re-ranked by a newer model)"""
        with self._cond:
            self._heap.clear()
            self._current.clear()
            for candidate in candidates:
                self._current[candidate.smiles] = candidate
                heapq.heappush(self._heap, (candidate.sort_key, next(self._counter), candidate))
            self._cond.notify_all()

    def pop(self, timeout: Optional[float] = 0) -> Optional[Candidate]:
        """Remove and return the best candidate

        Args:
            timeout: Seconds to wait for a candidate if the queue is empty (0: do not wait, None: forever)
        Returns:
            The candidate, or None if the queue stayed empty
        """
        with self._cond:
            if not self._current and timeout != 0:
                self._cond.wait_for(lambda: bool(self._current), timeout=timeout)
            while self._heap:
                _, _, candidate = heapq.heappop(self._heap)
                if self._current.get(candidate.smiles) is candidate:  # Skip superseded entries
                    del self._current[candidate.smiles]
                    return candidate
            return None

    def discard(self, smiles: str) -> None:
        """Remove a molecule from the queue, if present"""
        with self._cond:
            self._current.pop(smiles, None)

    def __contains__(self, smiles: str) -> bool:
        with self._cond:
            return smiles in self._current

    def __len__(self) -> int:
        with self._cond:
            return len(self._current)

    def snapshot(self) -> List[Candidate]:
        """The queued candidates, best first"""
        with self._cond:
            return sorted(self._current.values())
