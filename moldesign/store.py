"""Run directories: where a campaign writes its parameters and every result, line by line.

Every record file is JSON Lines (``*.jsonld``): one strict-JSON object per line (no bare ``NaN``),
appended, flushed and synced to disk as soon as the thinker receives the result, so a crash or a
Ctrl-C never loses a completed QC result. A truncated last line (the process died mid-write)
is skipped when reading.
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
import threading
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

logger = logging.getLogger(__name__)

SIMULATION_RECORDS = 'simulation_records.jsonld'
RL_RECORDS = 'rl_records.jsonld'
SCREENING_RECORDS = 'screening_records.jsonld'
RUN_PARAMS = 'run_params.json'

_PACKAGES = ('moldesign', 'colmena', 'parsl', 'rdkit', 'tblite', 'ase', 'pyscf', 'qcelemental', 'qcengine',
             'geometric', 'scikit-learn', 'tensorflow', 'keras', 'numpy', 'qm9pack', 'redis')


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


def dump_json(obj: Any, path: Path) -> None:
    """Write strict JSON to a file, atomically (write a temporary file, then rename)"""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + '.tmp')
    with tmp.open('w') as fp:
        json.dump(to_strict_json(obj), fp, indent=2, allow_nan=False)
        fp.flush()
        os.fsync(fp.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> Iterator[dict]:
    """Read a JSON Lines file, skipping a truncated or corrupt line with a warning

    Args:
        path: Path to the file (a missing file yields nothing)
    Yields:
        One dictionary per line
    """
    path = Path(path)
    if not path.exists():
        return
    with path.open() as fp:
        for i, line in enumerate(fp, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                logger.warning(f'Skipping unreadable line {i} of {path} (truncated write?)')


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


class RunStore:
    """Writes the records of one run, thread-safe, each line on disk before the call returns

    Args:
        run_dir: The run directory (created if needed)
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: Dict[str, Any] = {}

    def path(self, name: str) -> Path:
        """Path of a file in the run directory"""
        return self.run_dir / name

    def append(self, name: str, record: Dict[str, Any]) -> None:
        """Append one record to a JSON Lines file, flushed and synced to disk

        Args:
            name: File name within the run directory
            record: The record
        """
        line = json.dumps(to_strict_json(record), allow_nan=False)
        with self._lock:
            fp = self._files.get(name)
            if fp is None:
                fp = self._files[name] = self.path(name).open('a')
            fp.write(line + '\n')
            fp.flush()
            os.fsync(fp.fileno())

    def write_json(self, name: str, obj: Any) -> None:
        """Write a JSON document (atomically) into the run directory"""
        dump_json(obj, self.path(name))

    def read_records(self, name: str) -> List[dict]:
        """Read every record of a JSON Lines file of this run"""
        return list(read_jsonl(self.path(name)))

    def close(self) -> None:
        """Close the open record files"""
        with self._lock:
            for fp in self._files.values():
                fp.close()
            self._files.clear()


def load_json(path: Path) -> Optional[Any]:
    """Read a JSON document, or None if it does not exist"""
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text())
