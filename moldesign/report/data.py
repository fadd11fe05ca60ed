"""Read a run directory (the shared data contract) into memory, and derive timings from its records.

Everything here works on the files written by ``run.py`` only: ``run_params.json``, ``qc_spec.json``,
``summary.json`` (absent for an interrupted run) and the ``*.jsonld`` record files (one JSON object a
line; a truncated last line, left by an interrupted run, is skipped with a warning).

Records may be plain dictionaries (as read from the files) or Colmena ``Result`` objects (as held by
the thinker): the accessors below read both.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

logger = logging.getLogger(__name__)

QC_METHOD = 'compute_atomization_energy'
"""Method name of the QC task that computes one molecule"""
REFERENCE_METHOD = 'compute_reference_energy'
"""Method name of the QC task that computes one isolated atom"""
RECORD_FILES = {
    'simulation': 'simulation_records.jsonld',
    'rl': 'rl_records.jsonld',
    'screening': 'screening_records.jsonld',
}
"""Attribute of :class:`RunData` -> record file name"""


def read_json(path: Path) -> Optional[Dict[str, Any]]:
    """Read a JSON file, or return None if it is missing or unreadable

    Args:
        path: Path of the file
    Returns:
        The parsed content, None if the file is absent or is not valid JSON
    """
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        logger.warning(f'Cannot read {path}: {exc}')
        return None


def read_jsonld(path: Path) -> Tuple[List[Dict[str, Any]], int]:
    """Read a JSON-lines record file, tolerant of a truncated or corrupt line

    Args:
        path: Path of the file (a missing file gives no records)
    Returns:
        - The records, in file order
        - The number of lines skipped because they were not a JSON object
    """
    if not path.is_file():
        return [], 0
    records, skipped = [], 0
    with path.open(errors='replace') as fp:
        for lineno, line in enumerate(fp, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)  # also accepts bare NaN, as Colmena's Result.json() writes
            except ValueError:
                record = None
            if not isinstance(record, dict):
                logger.warning(f'{path.name}:{lineno}: skipped a line that is not a JSON object (truncated?)')
                skipped += 1
                continue
            records.append(record)
    return records, skipped


@dataclass
class RunData:
    """Everything a run directory holds, parsed"""

    run_dir: Path
    """Run directory"""
    run_params: Dict[str, Any] = field(default_factory=dict)
    """Content of run_params.json (empty if missing)"""
    qc_spec: Optional[Dict[str, Any]] = None
    """Content of qc_spec.json"""
    host_info: Optional[Dict[str, Any]] = None
    """Content of host_info.json"""
    reference_energies: Optional[Dict[str, float]] = None
    """Content of reference_energies.json (Hartree per element)"""
    summary: Optional[Dict[str, Any]] = None
    """Content of summary.json; None for an interrupted run"""
    simulation: List[Dict[str, Any]] = field(default_factory=list)
    """QC records (molecules and reference atoms, failures included)"""
    rl: List[Dict[str, Any]] = field(default_factory=list)
    """Generator (RL) task records"""
    screening: List[Dict[str, Any]] = field(default_factory=list)
    """Scoring (ML) task records"""
    skipped_lines: Dict[str, int] = field(default_factory=dict)
    """Record file name -> number of unreadable lines skipped"""

    @property
    def objective(self) -> str:
        """Name of the record field minimised by the run"""
        return self.run_params.get('objective') or 'atomization_energy'

    @property
    def n_slots(self) -> Optional[int]:
        """Number of QC slots (run_params parallel_guesses), None if unknown"""
        value = self.run_params.get('parallel_guesses')
        return int(value) if value else None

    @property
    def finished(self) -> bool:
        """Whether the run wrote its summary (interrupted runs do not)"""
        return self.summary is not None

    @property
    def molecule_records(self) -> List[Dict[str, Any]]:
        """QC records of molecules (not reference atoms), in evaluation order, failures included"""
        records = [(i, r) for i, r in enumerate(self.simulation) if r.get('method', QC_METHOD) == QC_METHOD]
        records.sort(key=lambda ir: (_int_or(ir[1].get('evaluation'), math.inf), ir[0]))
        return [r for _, r in records]


def _int_or(value: Any, default: float) -> float:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def load_run(run_dir: Union[str, Path]) -> RunData:
    """Read a run directory, finished or interrupted

    Args:
        run_dir: Run directory written by run.py
    Returns:
        The parsed content; missing files give empty fields
    Raises:
        FileNotFoundError: if ``run_dir`` is not a directory
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f'Run directory not found: {run_dir}')
    run = RunData(
        run_dir=run_dir,
        run_params=read_json(run_dir / 'run_params.json') or {},
        qc_spec=read_json(run_dir / 'qc_spec.json'),
        host_info=read_json(run_dir / 'host_info.json'),
        reference_energies=read_json(run_dir / 'reference_energies.json'),
        summary=read_json(run_dir / 'summary.json'),
    )
    for attr, name in RECORD_FILES.items():
        records, skipped = read_jsonld(run_dir / name)
        setattr(run, attr, records)
        if skipped:
            run.skipped_lines[name] = skipped
    logger.info(f'Read {run_dir}: {len(run.simulation)} QC, {len(run.rl)} generator and '
                f'{len(run.screening)} scoring records' + ('' if run.finished else ' (no summary.json: interrupted?)'))
    return run


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


def qc_utilization(records: Iterable[Any], n_slots: int, phase: Optional[str] = 'steered',
                   start: Optional[float] = None, end: Optional[float] = None) -> float:
    """Fraction of the available QC slot time spent computing

    Utilization = (sum of compute_ended - compute_started over the records of the phase) /
    (n_slots * length of the window). The window runs from the first compute_started to the last
    compute_ended of those records, unless ``start``/``end`` are given (e.g. ``end=time.time()`` for
    "utilization so far"); task intervals are clipped to the window. Failed tasks count: they held a slot.
    Without an explicit window, the downtime between the sessions of a restarted run (see
    :func:`sessions`) is left out of the available time.

    Args:
        records: QC records (dictionaries from simulation_records.jsonld, or Colmena Results)
        n_slots: Number of QC slots available (run_params parallel_guesses)
        phase: Only records of this phase ('reference', 'initial', 'steered'); None for all
        start: Start of the window (unix seconds); default: the first compute_started
        end: End of the window (unix seconds); default: the last compute_ended
    Returns:
        Utilization between 0 and 1; NaN if no record of the phase has compute times or the window is empty
    Raises:
        ValueError: if n_slots is not positive
    """
    if n_slots is None or n_slots <= 0:
        raise ValueError(f'n_slots must be a positive number of QC slots, got {n_slots!r}')
    selected = [r for r in records if (phase is None or record_phase(r) == phase) and compute_interval(r)]
    if not selected:
        return math.nan
    intervals = [compute_interval(r) for r in selected]
    if start is None and end is None:
        windows = sessions(selected)
    else:
        windows = [(min(s for s, _ in intervals) if start is None else start,
                    max(e for _, e in intervals) if end is None else end)]
    available = n_slots * sum(max(0., e - s) for s, e in windows)
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
