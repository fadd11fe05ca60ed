"""Writing a run directory: its lock (one process per run), appends synced to disk, the agent's checkpoint."""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import pickle
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from moldesign.store.files import (AGENT, LOCK, RECORD_FILES, DiskFullError, RunFileError, RunLocked, dump_json,
                                   repair_jsonl, to_strict_json, write_atomic)

logger = logging.getLogger(__name__)


class RunStore:
    """Writes the files of one run directory; holds its lock while open

    Appends are thread-safe. A record is on disk when :meth:`append` returns (written, flushed, synced), unless
    ``sync=False`` is passed: then it is written to the operating system (it survives a crash of this process)
    and the caller syncs a whole group of records at once with :meth:`sync` before acknowledging any of them.

    Args:
        run_dir: The run directory (created if needed)
    Raises:
        RunLocked: if another process holds the run directory
        RunFileError: if the directory cannot be created or written
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._lock = threading.Lock()
        self._files: Dict[str, Any] = {}
        self._dirty: set = set()
        self.disk_full = False
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fp = (self.run_dir / LOCK).open('a+')
        except OSError as exc:
            raise RunFileError(f'Cannot create or write the run directory {self.run_dir}: '
                               f'{exc.strerror or exc}') from None
        self._acquire_lock()

    def _acquire_lock(self) -> None:
        try:
            fcntl.flock(self._lock_fp.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fp.seek(0)
            holder = self._lock_fp.read().strip() or 'another process'
            self._lock_fp.close()
            raise RunLocked(f'{self.run_dir} is in use by {holder}; wait for it to end or stop it first') from None
        self._lock_fp.seek(0)
        self._lock_fp.truncate()
        self._lock_fp.write(f'process {os.getpid()} on {socket.gethostname()} since '
                            f'{datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")} UTC\n')
        self._lock_fp.flush()

    def path(self, name: str) -> Path:
        """Path of a file of the run directory"""
        return self.run_dir / name

    def repair(self) -> List[Path]:
        """Move cut last lines of the record files aside (before appending to an earlier run's files)

        Returns:
            Files holding the cut lines
        """
        return [aside for name in RECORD_FILES.values() if (aside := repair_jsonl(self.path(name))) is not None]

    def append(self, name: str, record: Dict[str, Any], sync: bool = True) -> None:
        """Append one record to a JSON-Lines file

        Args:
            name: File name within the run directory
            record: The record
            sync: Sync it to disk before returning (False: the caller calls :meth:`sync` for a group of records)
        Raises:
            DiskFullError: if the disk is full (the file is left ending with its last complete record)
        """
        line = (json.dumps(to_strict_json(record), allow_nan=False) + '\n').encode()
        with self._lock:
            if self.disk_full:
                raise DiskFullError(errno.ENOSPC, f'No space left to write {name}')
            fp = self._files.get(name)
            if fp is None:
                fp = self._files[name] = self.path(name).open('ab', buffering=0)
            start = fp.tell()
            try:
                if fp.write(line) != len(line):
                    raise OSError(errno.ENOSPC, 'short write')
                if sync:
                    os.fsync(fp.fileno())
                else:
                    self._dirty.add(name)
            except OSError as exc:
                self._undo(fp, start)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    self.disk_full = True
                    raise DiskFullError(errno.ENOSPC, f'No space left on the device of {self.run_dir} '
                                                      f'to write {name}') from None
                raise

    @staticmethod
    def _undo(fp, start: int) -> None:
        """Cut a partly written record off again"""
        try:
            fp.truncate(start)
        except OSError:  # pragma: no cover - nothing more can be done; the reader skips the cut line
            pass

    def sync(self) -> None:
        """Sync every record appended with ``sync=False`` to disk"""
        with self._lock:
            for name in self._dirty:
                try:
                    os.fsync(self._files[name].fileno())
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        self.disk_full = True
                        raise DiskFullError(errno.ENOSPC, f'No space left on the device of {self.run_dir}') from None
                    raise
            self._dirty.clear()

    def write_json(self, name: str, obj: Any) -> None:
        """Write a JSON document into the run directory, atomically"""
        dump_json(obj, self.path(name))

    def save_agent(self, agent: Any) -> None:
        """Keep the latest MolDQN agent (weights and exploration schedule) for a restart, atomically"""
        write_atomic(self.path(AGENT), pickle.dumps(agent))

    def close(self) -> None:
        """Close the record files and release the run directory's lock"""
        with self._lock:
            for fp in self._files.values():
                try:
                    fp.close()
                except OSError:  # Disk full: the records were synced already
                    pass
            self._files.clear()
        if not self._lock_fp.closed:
            self._lock_fp.close()  # Releases the lock


def load_agent(run_dir: Path) -> Optional[Any]:
    """The MolDQN agent saved in a run directory

    Args:
        run_dir: Run directory
    Returns:
        The agent, None if none was saved
    Raises:
        RunFileError: if the file exists but cannot be read (truncated, corrupt)
    """
    path = Path(run_dir) / AGENT
    if not path.exists():
        return None
    try:
        with path.open('rb') as fp:
            return pickle.load(fp)
    except Exception as exc:
        raise RunFileError(f'{path} cannot be read ({type(exc).__name__}: {exc}); delete it to start a new '
                           'MolDQN agent') from None
