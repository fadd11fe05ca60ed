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
import time
import weakref
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from moldesign.store.files import (AGENT, LOCK, RECORD_FILES, CorruptFileError, DiskFullError, RunFileError, RunLocked,
                                   dump_json, repair_jsonl, to_strict_json, write_atomic)

logger = logging.getLogger(__name__)


class RunStore:
    """Writes the files of one run directory; holds its lock while open

    Appends are thread-safe. A record is on disk when :meth:`append` returns (written, flushed, synced), unless
    ``sync=False`` is passed: then it is written to the operating system (it survives a crash of this process)
    and the caller syncs a whole group of records at once with :meth:`sync` before acknowledging any of them.
    Each file has its own lock, and no disk sync holds the lock of another file: the QC records of the consumer
    never wait for the sync of a screening record (tens to hundreds of ms on a busy disk).

    Args:
        run_dir: The run directory (created if needed)
    Raises:
        RunLocked: if another process holds the run directory
        RunFileError: if the directory cannot be created or written
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._lock = threading.Lock()  # Guards _files, _file_locks, _dirty and the disk-full state
        self._files: Dict[str, Any] = {}
        self._file_locks: Dict[str, threading.Lock] = {}
        self._dirty: set = set()
        self._sync_lock = threading.Lock()  # One sync at a time (see sync)
        self.disk_full = False
        """Whether a write failed for lack of space: every later write is refused (nothing half-written after it)"""
        self.first_full: Optional[str] = None
        """The file whose write failed first for lack of space"""
        self.refused: set = set()
        """Files whose writes raised :class:`DiskFullError`"""
        self.on_disk_full: Optional[Callable[[str], None]] = None
        """Called once, with the file's name, at the first write that fails for lack of space"""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fp = (self.run_dir / LOCK).open('a+')
        except OSError as exc:
            raise RunFileError(f'Cannot create or write the run directory {self.run_dir}: '
                               f'{exc.strerror or exc}') from None
        self._acquire_lock()
        # A forked child (the task server) shares the lock's open file: were it to outlive this process (killed
        # outright), the run would stay locked by a dead PID. The child closes its copy; ours keeps the lock.
        this = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (store := this()) is not None and store._forget_lock())

    def _forget_lock(self) -> None:
        """In a forked child: close the inherited descriptor of the lock (the parent keeps holding it)"""
        try:
            self._lock_fp.close()
        except OSError:  # pragma: no cover
            pass

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

    def create_record_files(self) -> None:
        """Create the (empty) record files of a new run: a run whose screening never came back, e.g. a small run
        fed by the thinker's own batches, still shows that no screening finished rather than a missing file"""
        for name in RECORD_FILES.values():
            self.path(name).touch()

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
                raise self._full(name)
            fp = self._files.get(name)
            if fp is None:
                try:
                    fp = self._files[name] = self.path(name).open('ab', buffering=0)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise self._full(name) from None
                    raise
                self._file_locks[name] = threading.Lock()
            file_lock = self._file_locks[name]
        error = None
        with file_lock:
            start = fp.tell()
            try:
                if fp.write(line) != len(line):
                    raise OSError(errno.ENOSPC, 'short write')
                if sync:
                    os.fsync(fp.fileno())
            except OSError as exc:
                self._undo(fp, start)
                error = exc
        if error is None:
            if not sync:
                with self._lock:
                    self._dirty.add(name)
            return
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            with self._lock:
                raise self._full(name) from None
        raise error

    def _full(self, name: str, refuse: bool = True) -> DiskFullError:
        """The error for a write refused for lack of space (the first one calls :attr:`on_disk_full`)"""
        if refuse:
            self.refused.add(name)
        if not self.disk_full:
            self.disk_full, self.first_full = True, name
            if self.on_disk_full is not None:
                self.on_disk_full(name)
        return DiskFullError(errno.ENOSPC, f'No space left on the device of {self.run_dir} (writing '
                                           f'{self.first_full})')

    def full(self, name: str) -> None:
        """Note that another file of the run (e.g. its log) could not be written for lack of space"""
        self._full(name, refuse=False)

    @staticmethod
    def _undo(fp, start: int) -> None:
        """Cut a partly written record off again"""
        try:
            fp.truncate(start)
        except OSError:  # pragma: no cover - nothing more can be done; the reader skips the cut line
            pass

    def sync(self) -> None:
        """Sync every record appended with ``sync=False`` to disk

        Appends go on meanwhile (the disk sync does not hold the lock: it takes milliseconds, and hundreds of
        milliseconds on a busy disk); the records appended before the call are on disk when it returns. Syncs run
        one at a time: a second caller waits for the sync under way, which may hold its records.
        """
        with self._sync_lock:
            with self._lock:
                files = [(name, self._files[name]) for name in self._dirty]
                self._dirty.clear()
            self._sync_files(files)

    def _sync_files(self, files: List[Tuple[str, Any]]) -> None:
        """Sync each (name, file) to disk; a file that fails stays to sync"""
        for name, fp in files:
            try:
                os.fsync(fp.fileno())
            except OSError as exc:
                with self._lock:
                    self._dirty.add(name)  # Still to sync
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise self._full(name) from None
                raise

    def write_json(self, name: str, obj: Any) -> None:
        """Write a JSON document into the run directory, atomically

        Raises:
            DiskFullError: if the disk is full (the previous version of the file is kept)
        """
        with self._disk_full_check(name):
            dump_json(obj, self.path(name))

    def save_agent(self, agent: Any) -> None:
        """Keep the latest MolDQN agent (weights and exploration schedule) for a restart, atomically

        Raises:
            DiskFullError: if the disk is full (the previous checkpoint is kept)
        """
        data = pickle.dumps(agent)
        with self._disk_full_check(AGENT):
            write_atomic(self.path(AGENT), data)

    @contextmanager
    def _disk_full_check(self, name: str) -> Iterator[None]:
        """Turn ENOSPC/EDQUOT into :class:`DiskFullError` and remember it"""
        if self.disk_full:
            raise self._full(name)
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._full(name) from None
            raise

    def quiesce(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until no record is being written, and keep others from starting one

        For exiting at once: the process ends holding the locks, so every record file ends with a complete line.
        """
        deadline = time.monotonic() + timeout
        if self._lock.acquire(timeout=timeout):  # No new append gets to its file's lock
            for file_lock in self._file_locks.values():  # Appends under way end their line
                file_lock.acquire(timeout=max(0., deadline - time.monotonic()))

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
        CorruptFileError: if the file is truncated or corrupt
        RunFileError: if the file cannot be read (permissions, I/O error, not a file)
    """
    path = Path(run_dir) / AGENT
    if not path.exists():
        return None
    try:
        with path.open('rb') as fp:
            data = fp.read()
    except OSError as exc:
        raise RunFileError(f'{path} cannot be read ({exc.strerror or exc})') from None
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise CorruptFileError(f'{path} is truncated or corrupt ({type(exc).__name__}: {exc}); delete it to start '
                               'a new MolDQN agent') from None
