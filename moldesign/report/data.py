"""Timings and objectives derived from a run's records (reading the run directory is :mod:`moldesign.store`'s job).

Records may be plain dictionaries (as read from the files) or Colmena ``Result`` objects (as held by
the thinker): the accessors below read both.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterable, List, Optional, Tuple

from moldesign.store import RunData, load_run

logger = logging.getLogger(__name__)

__all__ = ['RunData', 'load_run', 'QC_METHOD', 'REFERENCE_METHOD', 'record_time', 'record_phase', 'compute_interval',
           'worker_label', 'sessions', 'qc_utilization', 'record_objective']

QC_METHODS = ('compute_atomization_energy', 'compute_atomization_energies')
"""Method names of the QC tasks that compute molecules"""
QC_METHOD = QC_METHODS[0]
REFERENCE_METHOD = 'compute_reference_energy'
"""Method name of the QC task that computes one isolated atom"""


# Accessors that work on record dictionaries and on Colmena Result objects

def _get(record: Any, key: str, default: Any = None) -> Any:
    if isinstance(record, dict):
        return record.get(key, default)
    return getattr(record, key, default)


def _finite(value: Any) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def record_time(record: Any, name: str) -> Optional[float]:
    """One timestamp of a record (unix seconds), None if unset

    Args:
        record: Record dictionary or Colmena Result
        name: Timestamp name, e.g. ``compute_started``
    Returns:
        The timestamp, None if missing, null or NaN
    """
    timestamp = _get(record, 'timestamp')
    if timestamp is None:
        return None
    return _finite(_get(timestamp, name))


def record_phase(record: Any) -> Optional[str]:
    """Phase of a record ('reference', 'initial', 'steered'), from the record or its task_info"""
    phase = _get(record, 'phase')
    if phase is None:
        phase = (_get(record, 'task_info') or {}).get('phase')
    return phase


def compute_interval(record: Any) -> Optional[Tuple[float, float]]:
    """When a task ran on its worker

    Args:
        record: Record dictionary or Colmena Result
    Returns:
        (compute_started, compute_ended) in unix seconds, None if either is unset or they are out of order
    """
    start, end = record_time(record, 'compute_started'), record_time(record, 'compute_ended')
    if start is None or end is None or end < start:
        return None
    return start, end


def worker_label(record: Any) -> Optional[str]:
    """Name of the worker slot that ran a task: ``hostname/pool/rank``, None if unknown"""
    info = _get(record, 'worker_info')
    if not info:
        return None
    host = info.get('hostname', '?')
    pool = info.get('PARSL_WORKER_POOL_ID', '?')
    rank = info.get('PARSL_WORKER_RANK', '?')
    return f'{host}/{pool}/{rank}'


def _pool(record: Any) -> Optional[str]:
    info = _get(record, 'worker_info')
    return None if not info else f'{info.get("hostname")}/{info.get("PARSL_WORKER_POOL_ID")}'


def sessions(records: Iterable[Any]) -> List[Tuple[float, float]]:
    """Time spans of the sessions of a run (a restarted run has several), from its task records

    A new session starts where no task was computing (an idle gap) and the task after the gap ran on
    a worker pool never seen in the current session (a restart launches new Parsl worker pools).

    Args:
        records: Records with compute times and worker_info
    Returns:
        (first compute_started, last compute_ended) of each session, in time order
    """
    tasks = sorted((i, _pool(r)) for r in records if (i := compute_interval(r)) is not None)
    spans: List[Tuple[float, float]] = []
    pools: set = set()
    for (start, end), pool in tasks:
        if spans and start > spans[-1][1] and pool is not None and pools and pool not in pools:
            pools = set()  # Restart: idle gap, then new worker pools
            spans.append((start, end))
        elif spans:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
        if pool is not None:
            pools.add(pool)
    return spans


def qc_utilization(records: Iterable[Any], qc_workers: int, phase: Optional[str] = 'steered',
                   start: Optional[float] = None, end: Optional[float] = None) -> float:
    """Fraction of the available QC slot time spent computing

    Utilization = (sum of compute_ended - compute_started over the records of the phase) /
    (qc_workers * length of the window). The window runs from the first compute_started to the last
    compute_ended of those records, unless ``start``/``end`` are given (e.g. ``end=time.time()`` for
    "utilization so far"); task intervals are clipped to the window. Failed tasks count: they held a slot.
    A task that computed several molecules (a bundle) counts once.
    Without an explicit window, the downtime between the sessions of a restarted run (see
    :func:`sessions`) is left out of the available time.

    Args:
        records: QC records (dictionaries from simulation_records.jsonld, or Colmena Results)
        qc_workers: Number of QC workers (run_params qc_workers)
        phase: Only records of this phase ('reference', 'initial', 'steered'); None for all
        start: Start of the window (unix seconds); default: the first compute_started
        end: End of the window (unix seconds); default: the last compute_ended
    Returns:
        Utilization between 0 and 1; NaN if no record of the phase has compute times or the window is empty
    Raises:
        ValueError: if qc_workers is not positive
    """
    if qc_workers is None or qc_workers <= 0:
        raise ValueError(f'qc_workers must be a positive number of QC workers, got {qc_workers!r}')
    selected, seen = [], set()
    for r in records:
        task = _get(r, 'task_id')
        if (phase is None or record_phase(r) == phase) and compute_interval(r) and (task is None or task not in seen):
            seen.add(task)
            selected.append(r)
    if not selected:
        return math.nan
    intervals = [compute_interval(r) for r in selected]
    if start is None and end is None:
        windows = sessions(selected)
    else:
        windows = [(min(s for s, _ in intervals) if start is None else start,
                    max(e for _, e in intervals) if end is None else end)]
    available = qc_workers * sum(max(0., e - s) for s, e in windows)
    if available <= 0:
        return math.nan
    busy = sum(max(0., min(e, w_end) - max(s, w_start)) for s, e in intervals for w_start, w_end in windows)
    return busy / available


def record_objective(record: Dict[str, Any], objective: str) -> Optional[float]:
    """Objective value (kcal/mol) of a successful molecule record, None otherwise

    Args:
        record: Record dictionary from simulation_records.jsonld
        objective: Name of the AtomizationRecord field minimised
    Returns:
        The record's ``objective`` field, or else the field of its value; None for failures
    """
    if not record.get('success', False):
        return None
    value = _finite(record.get('objective'))
    if value is None and isinstance(record.get('value'), dict):
        value = _finite(record['value'].get(objective))
    return value
