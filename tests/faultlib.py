"""Helpers of the fault-injection tests: run.py as a subprocess, its records, its processes, its messages.

Everything here observes real runs (``run.py`` in a subprocess, real Parsl workers, GFN2-xTB): the records on
disk, the exit code, the console lines, and the processes left behind.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import psutil

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
RUN_PY = ROOT / 'run.py'
RUN_DIR_VARIABLE = 'MOLDESIGN_RUN_DIR'
"""Environment variable that marks every process of a run (set by the campaign, inherited by Parsl's processes)"""
TINY = ('--initial-count', '4', '--rl-episodes', '2', '--qc-workers', '1', '--verify-qc', 'none', '--quiet',
        '--no-report')
"""A tiny campaign (add ``--search-size``)"""


def env(**extra: str) -> Dict[str, str]:
    """Environment of run.py: the interpreter's bin/ first on PATH (Parsl starts interchange.py from PATH)"""
    result = dict(os.environ)
    result['PATH'] = str(Path(sys.executable).parent) + os.pathsep + result.get('PATH', '')
    result['PYTHONPATH'] = str(ROOT) + os.pathsep + result.get('PYTHONPATH', '')
    result.update(extra)
    return result


def run(cwd: Path, *args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run run.py to its end"""
    return subprocess.run([sys.executable, str(RUN_PY), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env(), **kwargs)


def start(cwd: Path, *args: str, **kwargs) -> subprocess.Popen:
    """Start run.py (stdout and stderr piped, text)"""
    return subprocess.Popen([sys.executable, str(RUN_PY), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), **kwargs)


def finish(proc: subprocess.Popen, timeout: float) -> Tuple[int, str, str]:
    """Wait for a started run.py; kill it (and fail) if it takes longer than ``timeout``

    Returns:
        Exit code, stdout, stderr
    """
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f'run.py did not end within {timeout:.0f} s; stderr: {err[-3000:]}')
    return proc.returncode, out, err


def wait_until(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.1):
    """Wait until ``predicate()`` is true; return its value"""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout:.0f} s waiting for {what}')
        time.sleep(poll)


def the_run_dir(out_dir: Path, timeout: float = 120) -> Path:
    """The one run directory created in ``out_dir``"""
    def _found() -> Optional[Path]:
        runs = [p for p in out_dir.iterdir() if p.is_dir()] if out_dir.is_dir() else []
        return runs[0] if len(runs) == 1 and (runs[0] / 'run_params.json').is_file() else None
    return wait_until(_found, timeout, f'a run directory in {out_dir}')


def log_lines(run_dir: Path, text: str) -> List[str]:
    """The lines of the run's ``runtime.log`` that contain ``text``"""
    path = run_dir / 'runtime.log'
    if not path.exists():
        return []
    return [line for line in path.read_text(errors='replace').splitlines() if text in line]


def wait_for_log(run_dir: Path, text: str, timeout: float, count: int = 1) -> str:
    """Wait until ``runtime.log`` has ``count`` lines containing ``text`` (a restart appends to the file)

    Returns:
        The last of them
    """
    return wait_until(lambda: (lines := log_lines(run_dir, text)) and len(lines) >= count and lines[-1], timeout,
                      f'{count} line(s) with {text!r} in runtime.log')


def read_records(path: Path) -> List[dict]:
    """Every line of a record file, parsed as strict JSON (a cut or glued line fails)"""
    if not path.exists():
        return []

    def _reject(token):
        raise ValueError(f'non-strict JSON token {token} in {path}')
    return [json.loads(line, parse_constant=_reject) for line in path.read_text().splitlines() if line.strip()]


def simulation(run_dir: Path) -> List[dict]:
    """The QC records of a run"""
    return read_records(run_dir / 'simulation_records.jsonld')


def partial_records(run_dir: Path) -> List[dict]:
    """The QC records a run has written so far, skipping a cut last line (for polling a running campaign)"""
    path = run_dir / 'simulation_records.jsonld'
    found = []
    if path.exists():
        for line in path.read_text(errors='replace').splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    return found


def key(record: dict) -> Tuple[str, str]:
    """The identity of a QC record: (method, SMILES or element); a restart must never compute one twice"""
    return record['method'], record.get('smiles') or record.get('element')


def check_records(run_dir: Path, before: Sequence[dict] = ()) -> List[dict]:
    """Every record parses, none is duplicated, and the records of ``before`` are still there, in order

    Returns:
        The QC records
    """
    records = simulation(run_dir)
    keys = [key(r) for r in records]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert not duplicates, f'computed twice: {duplicates}'
    for i, (old, new) in enumerate(zip(before, records)):
        assert old == new, f'record {i + 1} ({key(old)}) was lost or changed: now {key(new)}'
    assert len(records) >= len(before), f'{len(before) - len(records)} record(s) lost'
    molecules = [r for r in records if r.get('smiles') and r.get('phase') != 'verify']
    assert [r['evaluation'] for r in molecules] == list(range(1, len(molecules) + 1)), 'evaluations not contiguous'
    return records


def steered(records: Sequence[dict]) -> int:
    """Number of steered molecules among QC records"""
    return sum(r.get('phase') == 'steered' for r in records)


def error_lines(text: str) -> List[str]:
    """The console lines that contain 'error'"""
    return [line for line in text.splitlines() if 'error' in line.lower()]


def assert_one_line_error(stderr: str, *fragments: str) -> str:
    """Exactly one line contains 'error', it contains every fragment, and there is no traceback

    Returns:
        The line
    """
    assert 'Traceback' not in stderr, stderr[-3000:]
    lines = error_lines(stderr)
    assert len(lines) == 1, f'expected one error line, got {len(lines)}:\n' + stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], f'{fragment!r} not in {lines[0]!r}'
    return lines[0]


def processes_of(run_dir: Path) -> List[psutil.Process]:
    """Live processes of a run: their command line names the run directory, or they carry its marker variable"""
    marker = str(Path(run_dir).resolve())
    found = []
    for proc in psutil.process_iter(['pid', 'cmdline', 'status']):
        try:
            if proc.pid == os.getpid() or proc.info['status'] == psutil.STATUS_ZOMBIE:
                continue
            if marker in ' '.join(proc.info['cmdline'] or []) or proc.environ().get(RUN_DIR_VARIABLE) == marker:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def describe(procs: Sequence[psutil.Process]) -> str:
    """PIDs and command lines, for a failure message"""
    lines = []
    for proc in procs:
        try:
            lines.append(f'{proc.pid}: {" ".join(proc.cmdline())[:200]}')
        except psutil.Error:
            lines.append(f'{proc.pid}: (gone)')
    return '\n'.join(lines)


def assert_no_processes_left(run_dir: Path, timeout: float = 20) -> float:
    """No process of the run is alive within ``timeout`` seconds

    Returns:
        Seconds it took
    """
    start = time.monotonic()
    deadline = start + timeout
    while processes_of(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = processes_of(run_dir)
    assert not left, f'processes of {run_dir} still alive after {timeout:.0f} s:\n{describe(left)}'
    return time.monotonic() - start


def kill_processes_of(run_dir: Path) -> None:
    """Clean-up after a failed test: SIGKILL (and SIGCONT) every process of the run"""
    for proc in processes_of(run_dir):
        try:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        except psutil.Error:
            pass


def end_run(proc: Optional[subprocess.Popen], run_dir: Optional[Path]) -> None:
    """A scenario's clean-up, whatever state it ended in: kill run.py if it still runs, then every process of the run"""
    if proc is not None and proc.poll() is None:
        proc.kill()
    if run_dir is not None:
        kill_processes_of(run_dir)


def qc_workers(run_dir: Path) -> List[psutil.Process]:
    """Worker processes of the Parsl ``qc`` executor of a run (the pool's children that loaded tblite)"""
    workers = []
    for proc in psutil.process_iter(['cmdline']):
        cmdline = ' '.join(proc.info['cmdline'] or [])
        if 'process_worker_pool' in cmdline and str(Path(run_dir).resolve()) in cmdline and '/qc' in cmdline:
            for child in proc.children():
                try:
                    if any('tblite' in m.path for m in child.memory_maps()):
                        workers.append(child)
                except psutil.Error:
                    pass
    return workers


def task_server(run_py: subprocess.Popen) -> Optional[psutil.Process]:
    """The task server: the child of run.py titled 'moldesign: task server of RUN_DIR'"""
    try:
        children = psutil.Process(run_py.pid).children()
    except psutil.NoSuchProcess:
        return None
    servers = [c for c in children if 'task server' in ' '.join(c.cmdline())]
    return servers[0] if servers else None


def free_port() -> int:
    """A free TCP port on loopback"""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_redis(directory: Path, password: str) -> Tuple[subprocess.Popen, int]:
    """A real redis-server on loopback with a password (the caller terminates it)

    Returns:
        The process and its port
    """
    import socket
    port = free_port()
    proc = subprocess.Popen(['redis-server', '--port', str(port), '--bind', '127.0.0.1', '--requirepass', password,
                             '--save', '', '--appendonly', 'no', '--dir', str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _up() -> bool:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=0.5).close()
            return True
        except OSError:
            return False
    wait_until(_up, 10, 'redis-server to listen')
    return proc, port


def mount_tmpfs(path: Path, size: str, read_only: bool = False) -> None:
    """Mount a tmpfs of ``size`` (e.g. '2m') at ``path`` (root only)"""
    path.mkdir(parents=True, exist_ok=True)
    options = f'size={size}' + (',ro' if read_only else '')
    subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)], check=True, capture_output=True)


def umount(path: Path) -> None:
    """Unmount a file system (lazily, so a process still inside cannot block it)"""
    subprocess.run(['umount', '-l', str(path)], capture_output=True)


def fill_disk(directory: Path) -> int:
    """Write a file into ``directory`` until its file system is full

    Returns:
        Bytes written
    """
    written = 0
    block = b'\0' * 4096
    with open(directory / 'filler', 'wb', buffering=0) as fp:
        try:
            while True:
                written += fp.write(block)
        except OSError as exc:
            if exc.errno != 28:
                raise
    return written
