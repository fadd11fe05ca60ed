"""The result dictionary the task consumer writes and the steering agent reads: every molecule computed so far.

Adding a result costs constant time (no sorting of the whole dictionary, no pass over the records), so the
consumer keeps up with hundreds of results per second: the best molecules are kept in a short sorted list, the
utilization of the QC slots is summed as results arrive.
"""
from __future__ import annotations

import bisect
import heapq
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

TOP = 64
"""How many of the best molecules are kept in order"""


@dataclass
class Entry:
    """What the dictionary knows of one molecule"""

    success: bool
    objective: Optional[float]
    atomization_energy: Optional[float]
    evaluation: Optional[int]
    phase: str
    batch: Optional[int]
    verified: Optional[float] = None
    """Objective value at the verification level, once computed"""
    verified_atomization_energy: Optional[float] = None


class ResultDatabase:
    """Every molecule computed by a campaign, with counters (thread-safe)

    Args:
        objective: Name of the record field minimised
        qc_slots: QC workers, for the utilization
    """

    def __init__(self, objective: str, qc_slots: int):
        self.objective = objective
        self.qc_slots = qc_slots
        self.lock = threading.RLock()
        self.entries: Dict[str, Entry] = {}
        self.n_evaluations = 0  # Search-level QC evaluations (initial + steered), failures included
        self.n_failed = 0
        self.n_steered = 0
        self.n_initial = 0
        self.n_verified = 0
        self._top: List[Tuple[float, str]] = []
        self._train: List[Tuple[str, float]] = []
        self._failed: Set[str] = set()
        self._verified: List[Tuple[str, float]] = []  # (SMILES, verified - search atomization energy, kcal/mol)
        self._busy = 0.  # Steered QC compute time so far (tasks counted once)
        self._first_start: Optional[float] = None
        self._tasks_seen: Set[str] = set()
        self._best_verified: Optional[Tuple[float, str]] = None

    def add(self, record: dict) -> bool:
        """Add the record of a molecule computed at the search's level

        Args:
            record: Molecule record (see :mod:`moldesign.steer.records`)
        Returns:
            Whether the molecule entered the list of the best
        """
        smiles, value = record['smiles'], record.get('value') or {}
        success = bool(record.get('success'))
        objective = record.get('objective') if success else None
        entry = Entry(success, objective, value.get('atomization_energy'), record.get('evaluation'),
                      record.get('phase') or 'steered', record.get('batch'))
        with self.lock:
            previous = self.entries.get(smiles)
            if previous is not None:
                entry.verified = previous.verified
                entry.verified_atomization_energy = previous.verified_atomization_energy
            self.entries[smiles] = entry
            self.n_evaluations = max(self.n_evaluations, record.get('evaluation') or 0)
            if entry.phase == 'steered':
                self.n_steered += 1
                self._count_busy(record)
            elif entry.phase == 'initial':
                self.n_initial += 1
            if not success:
                self.n_failed += 1
                self._failed.add(smiles)
                return False
            if entry.atomization_energy is not None:
                self._train.append((smiles, entry.atomization_energy))
            if objective is None:
                return False
            position = bisect.bisect(self._top, (objective, smiles))
            if position >= TOP:
                return False
            self._top.insert(position, (objective, smiles))
            del self._top[TOP:]
            return True

    def add_verified(self, smiles: str, record: dict) -> None:
        """Add the verification (higher-level) record of a molecule"""
        if not record.get('success'):
            return
        value = record.get('value') or {}
        with self.lock:
            entry = self.entries.get(smiles)
            if entry is None:
                return
            entry.verified = record.get('objective')
            entry.verified_atomization_energy = value.get('atomization_energy')
            self.n_verified += 1
            if entry.verified is not None and (self._best_verified is None or entry.verified < self._best_verified[0]):
                self._best_verified = (entry.verified, smiles)
            if entry.atomization_energy is not None and entry.verified_atomization_energy is not None:
                self._verified.append((smiles, entry.verified_atomization_energy - entry.atomization_energy))

    def verification_candidates(self, n: int) -> Tuple[List[Tuple[str, float]], List[Tuple[float, str]]]:
        """What the verification may still check, and what it found

        Args:
            n: How many of the best unverified molecules (by the search's objective) to return
        Returns:
            - (SMILES, total atomization energy at the search's level) of the ``n`` best successfully computed
              molecules not verified yet
            - (objective at the verification level, SMILES) of every verified molecule
        """
        with self.lock:
            unverified = heapq.nsmallest(n, ((e.objective, s) for s, e in self.entries.items()
                                             if e.success and e.verified is None and e.objective is not None
                                             and e.atomization_energy is not None))
            verified = [(e.verified, s) for s, e in self.entries.items() if e.verified is not None]
            return [(s, self.entries[s].atomization_energy) for _, s in unverified], verified

    def _count_busy(self, record: dict) -> None:
        stamps = record.get('timestamp') or {}
        start, end = stamps.get('compute_started'), stamps.get('compute_ended')
        task = record.get('task_id')
        if start is None or end is None or end < start or task in self._tasks_seen:
            return
        self._tasks_seen.add(task)
        self._busy += end - start
        self._first_start = start if self._first_start is None else min(self._first_start, start)

    def utilization(self, now: Optional[float] = None) -> Optional[float]:
        """Share of the QC slots' time spent computing since the first steered task started (None before)"""
        with self.lock:
            if self._first_start is None:
                return None
            window = (now or time.time()) - self._first_start
            return min(1., self._busy / (self.qc_slots * window)) if window > 0 else None

    def best(self, n: int = 1) -> List[Tuple[float, str]]:
        """The best molecules so far: (objective, SMILES), best first"""
        with self.lock:
            return self._top[:n]

    def best_verified(self) -> Optional[Tuple[float, str]]:
        """The best molecule by its verified value: (objective at the verification level, SMILES), None before"""
        with self.lock:
            return self._best_verified

    def rank_of(self, smiles: str) -> Optional[int]:
        """0-based rank of a molecule among the best, None if not among them"""
        with self.lock:
            for i, (_, s) in enumerate(self._top):
                if s == smiles:
                    return i
            return None

    @property
    def n_successes(self) -> int:
        """Molecules computed successfully (the size of the training set)"""
        with self.lock:
            return len(self._train)

    def training_set(self) -> List[Tuple[str, float]]:
        """(SMILES, total atomization energy) of every successfully computed molecule"""
        with self.lock:
            return list(self._train)

    def failures(self) -> List[str]:
        """Molecules whose QC failed"""
        with self.lock:
            return list(self._failed)

    def verified_deltas(self) -> List[Tuple[str, float]]:
        """(SMILES, verified minus search-level atomization energy in kcal/mol) of every verified molecule"""
        with self.lock:
            return list(self._verified)

    def __contains__(self, smiles: str) -> bool:
        with self.lock:
            return smiles in self.entries

    def __len__(self) -> int:
        with self.lock:
            return len(self.entries)
