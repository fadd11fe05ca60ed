"""The run directory's file names, its one JSON writer (atomic) and one JSON-Lines reader, and their repair.

Record files are JSON Lines (``*.jsonld``): one strict-JSON object per line (no bare ``NaN``). JSON documents are
written atomically (temporary file, synced, then renamed).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

logger = logging.getLogger(__name__)


RUN_PARAMS = 'run_params.json'
QC_SPEC = 'qc_spec.json'
HOST_INFO = 'host_info.json'
INITIAL_MOLECULES = 'initial_molecules.json'
REFERENCE_ENERGIES = 'reference_energies.json'
SIMULATION_RECORDS = 'simulation_records.jsonld'
RL_RECORDS = 'rl_records.jsonld'
SCREENING_RECORDS = 'screening_records.jsonld'
AGENT = 'agent.pkl'
SUMMARY = 'summary.json'
RUNTIME_LOG = 'runtime.log'
PARSL_DIR = 'parsl'
PARSL_CONFIG = 'parsl_config.txt'
MONITORING_DB = 'monitoring.db'
REPORT = 'report.md'
FIGURES = 'figures'
LOCK = '.lock'
FILES = (RUN_PARAMS, QC_SPEC, HOST_INFO, INITIAL_MOLECULES, REFERENCE_ENERGIES, SIMULATION_RECORDS, RL_RECORDS,
         SCREENING_RECORDS, AGENT, SUMMARY, RUNTIME_LOG, PARSL_DIR, PARSL_CONFIG, MONITORING_DB, REPORT, FIGURES)
"""Every file of a run directory"""
RECORD_FILES = {'simulation': SIMULATION_RECORDS, 'rl': RL_RECORDS, 'screening': SCREENING_RECORDS}
"""Attribute of :class:`RunData` -> record file"""

_PACKAGES = ('moldesign', 'colmena', 'parsl', 'rdkit', 'tblite', 'ase', 'pyscf', 'qcelemental', 'qcengine',
             'geometric', 'scikit-learn', 'tensorflow', 'keras', 'numpy', 'qm9pack', 'redis')


class RunFileError(RuntimeError):
    """A file of a run directory is missing, unreadable or invalid (the message names the file)"""


class CorruptFileError(RunFileError):
    """A file of a run directory can be read, but its content is truncated or invalid"""


class RunLocked(RuntimeError):
    """Another process holds the run directory"""


class DiskFullError(OSError):
    """A record could not be written because the disk (or quota) is full"""


# ---------------------------------------------------------------------- JSON in and out
def to_strict_json(obj: Any) -> Any:
    """Make an object strict-JSON serialisable: NaN and infinities become ``None``

    Args:
        obj: Nested structure of dicts, lists and scalars (pydantic models are dumped)
    Returns:
        The same structure with every non-finite float replaced by ``None``
    """
    if hasattr(obj, 'model_dump'):
        obj = obj.model_dump(mode='json')
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict_json(v) for v in obj]
    if hasattr(obj, 'item') and callable(obj.item):  # numpy scalars
        return to_strict_json(obj.item())
    return obj


def write_atomic(path: Path, data: Union[str, bytes]) -> None:
    """Write a file atomically: a temporary file beside it, synced, then renamed over it

    Args:
        path: Destination
        data: Text or bytes
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        with tmp.open('wb') as fp:
            fp.write(data.encode() if isinstance(data, str) else data)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def dump_json(obj: Any, path: Path) -> None:
    """Write strict JSON to a file, atomically"""
    write_atomic(path, json.dumps(to_strict_json(obj), indent=2, allow_nan=False) + '\n')


def read_json(path: Path, required: bool = False) -> Optional[Any]:
    """Read a JSON document

    Args:
        path: The file
        required: Raise if it is missing (otherwise return None)
    Returns:
        The parsed content, None if the file is absent and not required
    Raises:
        RunFileError: if the file is unreadable or not valid JSON, or missing and required
    """
    path = Path(path)
    if not path.exists():
        if required:
            raise RunFileError(f'{path} is missing')
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunFileError(f'{path} is not valid JSON ({type(exc).__name__}: {exc})') from None


def read_jsonl(path: Path) -> Tuple[List[dict], int]:
    """Read a JSON-Lines record file, skipping (and counting) lines that are not a JSON object

    Args:
        path: The file (a missing file gives no records)
    Returns:
        - The records, in file order
        - The number of lines skipped (a cut last line, or corruption)
    """
    path = Path(path)
    if not path.is_file():
        return [], 0
    records, skipped = [], 0
    with path.open(errors='replace') as fp:
        for lineno, line in enumerate(fp, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)  # Also accepts bare NaN, as Colmena's Result.json() writes
            except ValueError:
                record = None
            if not isinstance(record, dict):
                logger.warning(f'{path.name}:{lineno}: skipped a line that is not a JSON object (cut?)')
                skipped += 1
                continue
            records.append(record)
    return records, skipped


def repair_jsonl(path: Path) -> Optional[Path]:
    """Move a cut last line of a record file aside, so that appending starts on a fresh line

    A process killed (or a disk filled) in the middle of a write leaves a last line without its newline. Appending
    to it would glue the next record onto it and lose both. The cut part is moved to ``<name>.partial-<time>``
    for inspection and the file is truncated to its last complete line.

    Args:
        path: Record file
    Returns:
        Path of the file holding the cut line, None if the file was intact
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with path.open('rb+') as fp:
        fp.seek(-1, os.SEEK_END)
        if fp.read(1) == b'\n':
            return None
        data_end = fp.seek(0, os.SEEK_END)
        block = 1 << 16
        cut_at = 0
        position = data_end
        while position > 0:  # Find the last newline from the end
            start = max(0, position - block)
            fp.seek(start)
            chunk = fp.read(position - start)
            index = chunk.rfind(b'\n')
            if index >= 0:
                cut_at = start + index + 1
                break
            position = start
        fp.seek(cut_at)
        partial = fp.read()
        stamp = datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')
        aside = path.with_name(f'{path.name}.partial-{stamp}')
        aside.write_bytes(partial)
        fp.truncate(cut_at)
        fp.flush()
        os.fsync(fp.fileno())
    logger.info(f'{path.name}: its last line was cut ({len(partial)} bytes, an interrupted write); '
                f'moved it to {aside.name}; appending after the last complete record')
    return aside


# ---------------------------------------------------------------------- names and host
def make_run_name(params: Dict[str, Any]) -> str:
    """Name of a new run directory: UTC time stamp and a short hash of the parameters"""
    stamp = datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    digest = hashlib.sha256(json.dumps(to_strict_json(params), sort_keys=True).encode()).hexdigest()[:8]
    return f'{stamp}-{digest}'


def get_host_info() -> Dict[str, Any]:
    """Describe the machine and software a run used"""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        'hostname': platform.node(),
        'platform': platform.platform(),
        'processor': platform.processor() or platform.machine(),
        'cpu_count': os.cpu_count(),
        'available_cores': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
        'python': sys.version,
        'packages': versions,
        'git_commit': commit,
        'time_utc': datetime.now(timezone.utc).isoformat(),
    }
