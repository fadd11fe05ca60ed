"""The Parsl task server: QC methods on the executor ``qc``, ML methods on ``ml``, and stopping it without leftovers.

The task server is a child process (forked) that loads Parsl itself. It ignores SIGINT, so a Ctrl-C at the
terminal reaches only the thinker, which drains the work and then stops the server. It is a child subreaper
and gets a signal when its parent dies (Linux), so that when ``run.py`` is killed outright the server shuts
Parsl down and kills every process Parsl started (interchanges, local worker pools) instead of leaving them.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import signal
import sys
import threading
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import parsl
import psutil
from colmena.exceptions import TimeoutException
from colmena.models import Result
from colmena.models.methods import PythonMethod
from colmena.queue.base import ColmenaQueues
from colmena.task_server.parsl import ParslTaskServer
from parsl.config import Config
from parsl.utils import setproctitle

from moldesign.steer.queues import TOPICS
from moldesign.steer.signals import unblock_sigint

logger = logging.getLogger(__name__)

PARSL_SHUTDOWN_TIMEOUT = 5.
"""Seconds the task server gives Parsl to shut down before it kills Parsl's processes"""
INTERCHANGE_GRACE = 1.
"""Seconds an HTEX interchange gets to exit on SIGTERM before it is killed (Parsl's default: 10)"""
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36
_PARENT_DEATH_SIGNAL = signal.SIGUSR2
RUN_DIR_VARIABLE = 'MOLDESIGN_RUN_DIR'
"""Environment variable naming the run directory in every process Parsl starts for a run (interchanges, worker
pools, workers: the interchange's command line, ``parsl: HTEX interchange``, does not name the run)"""
TASK_SERVER_TITLE = 'moldesign: task server of'
"""The task server's process title (command line), followed by the run directory. A forked process shows its
parent's environment as it was at start (``/proc/PID/environ``), so the title is what finds it."""


class QCTimeout(TimeoutError):
    """A QC task ran longer than its time limit"""


class TimeLimited:
    """A worker function that raises :class:`QCTimeout` after ``seconds`` of wall time (picklable)

    Uses SIGALRM, so it acts only when the task runs in the main thread of its worker process
    (as in Parsl's HighThroughputExecutor); elsewhere the function runs without a limit.

    Args:
        func: Function to wrap (its name is kept: Colmena names methods after ``__name__``)
        seconds: Time limit
    """

    def __init__(self, func: Callable, seconds: float):
        self.func = func
        self.seconds = seconds
        self.__name__ = func.__name__
        self.__doc__ = func.__doc__

    def __call__(self, *args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return self.func(*args, **kwargs)

        def _alarm(signum, frame):
            raise QCTimeout(f'{self.__name__} exceeded the QC time limit of {self.seconds:g} s')

        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        try:
            return self.func(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def time_limited(func: Callable, seconds: Optional[float]) -> Callable:
    """Wrap a worker function so it raises :class:`QCTimeout` after ``seconds`` (None or 0: no limit)"""
    return TimeLimited(func, seconds) if seconds else func


class NodeAwareMethod(PythonMethod):
    """Colmena's Python method, also recording the node a task ran on

    ``worker_info['node']`` is the scheduler's name of the node (Slurm's ``SLURMD_NODENAME``, PBS's short host
    name), else the host name: emulated or virtual nodes may share one host name. ``worker_info['block']`` is
    Parsl's block (batch job) of the worker.
    """

    def __call__(self, result: Result) -> Result:
        result = super().__call__(result)
        if result.worker_info is not None:
            setattr(result.worker_info, 'node', os.environ.get('SLURMD_NODENAME') or platform.node())
            if 'PARSL_WORKER_BLOCK_ID' in os.environ:
                setattr(result.worker_info, 'block', os.environ['PARSL_WORKER_BLOCK_ID'])
        return result


def _prctl(option: int, value: int) -> bool:
    """Call Linux's prctl; False where it is not available"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return False


class TaskServer(ParslTaskServer):
    """Colmena's Parsl task server, made safe to stop

    - ignores SIGINT, SIGTERM and SIGHUP: a Ctrl-C at the terminal, a closed terminal or a scheduler's
      SIGTERM reach the whole process group, and the thinker decides (it drains in-flight QC tasks first);
    - exits when its parent dies (parent-death signal, and a thread that polls the parent's PID), after
      cancelling Parsl's blocks and killing its processes;
    - on the kill signal, shuts Parsl down without waiting for tasks the thinker no longer waits for.
      Parsl's HTEX shutdown can hang joining its result thread when a task (e.g. a MolDQN call the
      generator abandoned at the end of the run) is still running; after ``PARSL_SHUTDOWN_TIMEOUT``
      seconds the executors' processes (interchanges, worker pools) are killed instead.
    """

    _dying = False

    def run(self) -> None:
        parent = os.getppid()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        unblock_sigint()  # Blocked by run.py's relay; the programs Parsl starts get SIGINT as they expect
        # A log file that cannot be written (disk full) must not print a traceback per line: the thinker's
        # process reports a full disk once
        logging.raiseExceptions = False
        self._divert_stderr_of_children()
        setproctitle(f'{TASK_SERVER_TITLE} {os.environ.get(RUN_DIR_VARIABLE, "?")}')
        signal.signal(_PARENT_DEATH_SIGNAL, self._on_parent_death)
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # Local worker pools, detached by Parsl, stay our descendants
        _prctl(_PR_SET_PDEATHSIG, _PARENT_DEATH_SIGNAL)
        if os.getppid() != parent:  # The parent died before the signal was armed
            self._on_parent_death(_PARENT_DEATH_SIGNAL, None)
        threading.Thread(target=self._watch_parent, args=(parent,), name='parent-watch', daemon=True).start()
        try:
            super().run()
        except BaseException:
            logger.exception('Task server failed; shutting Parsl down')
            self._shutdown_parsl()
            raise

    def _divert_stderr_of_children(self) -> None:
        """Give the programs Parsl starts (the interchanges) ``parsl/interchange.stderr`` as their stderr

        They inherit this process's file descriptor 2, the console: an interchange that cannot write its log (disk
        full) would print Python's ``--- Logging error ---`` block there for each line. This process's own
        ``sys.stderr`` is kept: ``runtime.log`` when the campaign forked it inside
        :func:`~moldesign.report.console.children_off_console`, else the console (through a duplicate of the
        descriptor).
        """
        try:
            path = Path(self.config.run_dir) / 'interchange.stderr'
            path.parent.mkdir(parents=True, exist_ok=True)
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            target = os.open(os.devnull, os.O_WRONLY)
        try:
            on_console = sys.stderr.fileno() == 2
        except (AttributeError, ValueError, OSError):  # Not a file (e.g. replaced by a test): leave it as it is
            on_console = False
        console = None
        if on_console:
            try:
                sys.stderr.flush()
                console = open(os.dup(2), 'w', buffering=1, encoding=sys.stderr.encoding, errors='backslashreplace')
            except (OSError, ValueError):  # No usable stderr: leave everything as it is
                os.close(target)
                return
        os.dup2(target, 2)
        os.close(target)
        if console is not None:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                    handler.setStream(console)
            sys.stderr = console

    def _watch_parent(self, parent: int) -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), _PARENT_DEATH_SIGNAL)

    def _on_parent_death(self, signum, frame) -> None:
        """The thinker's process died: stop Parsl and every process it started, then exit"""
        if self._dying:  # The parent-death signal and the watching thread both call this
            return
        self._dying = True
        logger.warning('Task server: the thinker process is gone; stopping Parsl and its processes')
        self._shutdown_parsl()
        os._exit(1)

    def _shutdown_parsl(self) -> None:
        """Shut Parsl down (cancels batch jobs), bounded in time; then kill every process Parsl left"""
        done = threading.Event()

        def _shutdown():
            try:
                dfk = parsl.dfk()
                for executor in dfk.executors.values():  # The interchange takes seconds to honour SIGTERM
                    if hasattr(executor, 'interchange_proc'):
                        executor.shutdown = partial(executor.shutdown, timeout=INTERCHANGE_GRACE)
                dfk.cleanup()
            except Exception as exc:  # No DFK loaded, or cleanup failed: the processes are killed below
                logger.info(f'Parsl cleanup: {exc}')
            done.set()

        threading.Thread(target=_shutdown, name='parsl-cleanup', daemon=True).start()
        if done.wait(PARSL_SHUTDOWN_TIMEOUT):
            logger.info('Parsl shut down')
        else:
            logger.warning(f'Parsl did not shut down within {PARSL_SHUTDOWN_TIMEOUT:.0f} s (a task the thinker no '
                           'longer waits for is still running); killing its processes')
        for child in psutil.Process(os.getpid()).children():
            kill_process_tree(child.pid)

    def _setup(self):
        super()._setup()
        if not logging.getLogger('colmena').isEnabledFor(logging.INFO):  # Kept with run.py --debug
            quiet_parsl_task_lines()

    def _cleanup(self):
        self._shutdown_parsl()


PARSL_TASK_LOGGERS = ('parsl.dataflow.dflow', 'parsl.dataflow.memoization', 'parsl.process_loggers')
"""Parsl loggers that write ~16 lines for every task (state changes, dependencies, memoization)"""


def quiet_parsl_task_lines() -> None:
    """Keep only the warnings and errors of Parsl's per-task loggers (in ``parsl.log`` and ``runtime.log``)

    ``parsl.load`` sets Parsl's loggers to DEBUG, and its DataFlowKernel then writes ~16 lines per task to both
    files: 1.8-2.1 ms of the task server's CPU per task (0.2 ms without them), with thousands of tasks per
    minute. Executors, providers and the interchange keep their lines.
    """
    for name in PARSL_TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def make_task_server(queues: ColmenaQueues, config: Config, qc_methods: Sequence[Callable],
                     ml_methods: Sequence[Callable], qc_timeout: Optional[float] = None) -> TaskServer:
    """Map the QC methods to executor ``qc`` and the ML methods to ``ml``

    Args:
        queues: Server side of the queues
        config: Parsl configuration with executors labelled ``qc`` and ``ml``
        qc_methods: Task functions run on ``qc``
        ml_methods: Task functions run on ``ml``
        qc_timeout: Wall-time limit of one QC task in seconds (None: none)
    Returns:
        The task server (not started)
    Raises:
        ValueError: if the configuration lacks one of the executors
    """
    labels = {e.label for e in config.executors}
    missing = {'qc', 'ml'} - labels
    if missing:
        raise ValueError(f'The Parsl configuration lacks executor(s) labelled {", ".join(sorted(missing))} '
                         f'(has: {", ".join(sorted(labels))})')
    methods: List[Tuple[PythonMethod, Dict]] = [(NodeAwareMethod(time_limited(f, qc_timeout)), {'executors': ['qc']})
                                                for f in qc_methods]
    methods += [(NodeAwareMethod(f), {'executors': ['ml']}) for f in ml_methods]
    return TaskServer(methods, queues, config)


def stop_task_server(server: TaskServer, queues: ColmenaQueues, timeout: float = 60.,
                     on_result: Optional[Callable[[Result], None]] = None) -> None:
    """Ask the task server to stop; kill it and its process tree if it does not within ``timeout``

    Results that still arrive are read meanwhile: a result nobody reads can fill a pipe and block the
    task server's sending thread, and with it Parsl's shutdown (e.g. the last MolDQN agent, a few MB,
    when the generator stopped waiting for it).

    Args:
        server: A started task server
        queues: Client side of its queues
        timeout: Seconds to wait for a clean shutdown
        on_result: Called with each result read while stopping (e.g. to write a late QC result to disk)
    """
    if server.is_alive():
        try:
            queues.send_kill_signal()
        except Exception as exc:  # Broken pipe or Redis gone: fall through to killing
            logger.warning(f'Could not send the kill signal to the task server: {exc}')
        deadline = time.monotonic() + timeout
        while server.is_alive() and time.monotonic() < deadline:
            for result in pending_results(queues):
                logger.info(f'Result of {result.method} arrived while stopping')
                if on_result is not None:
                    on_result(result)
            server.join(0.05)
    if server.is_alive():
        logger.warning(f'Task server did not stop within {timeout:.0f} s; killing its processes')
        kill_process_tree(server.pid)
        server.join(5)
    for result in pending_results(queues):  # Sent just before the server exited
        if on_result is not None:
            on_result(result)
    logger.info(f'Task server stopped (exit code {server.exitcode})')


def pending_results(queues: ColmenaQueues, topics: Iterable[str] = TOPICS) -> List[Result]:
    """Every result waiting in the queues (none if they cannot be read any more)"""
    found = []
    for topic in topics:
        while True:
            try:
                found.append(queues.get_result(topic=topic, timeout=0.01))
            except TimeoutException:
                break
            except Exception as exc:  # Broken pipe, Redis gone, unreadable message
                logger.debug(f'Cannot read results of topic {topic} while stopping: {exc}')
                break
    return found


def kill_process_tree(pid: int) -> None:
    """Kill a process and all its descendants (SIGKILL)"""
    try:
        kill_processes([psutil.Process(pid)])
    except psutil.NoSuchProcess:
        return


def kill_processes(procs: Sequence[psutil.Process], timeout: float = 5.) -> None:
    """Kill processes and all their descendants (SIGKILL, parents first), then wait for them once

    Args:
        procs: The processes
        timeout: Seconds to wait for them to be gone (zombies count as gone)
    """
    everything: Dict[int, psutil.Process] = {}
    for proc in procs:
        try:
            for p in [proc] + proc.children(recursive=True):
                everything.setdefault(p.pid, p)
        except psutil.Error:
            continue
    for proc in everything.values():
        try:
            proc.kill()  # Also ends a stopped process
        except psutil.Error:
            pass

    def _gone() -> bool:
        for proc in everything.values():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.Error:
                continue
        return True

    deadline = time.monotonic() + timeout
    while not _gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in everything.values():  # Reap our own children
        try:
            proc.wait(0)
        except (psutil.Error, ChildProcessError):
            pass


def processes_of_run(run_dir: os.PathLike) -> List[psutil.Process]:
    """Live processes of a run other than this one and its descendants (e.g. Parsl's, left by a killed session)

    They are the task server (its title, :data:`TASK_SERVER_TITLE`) and the processes it started (they carry
    :data:`RUN_DIR_VARIABLE`, see :func:`mark_run_processes`). Not any process whose command line names the run
    directory: another ``run.py --restart RUN_DIR`` waiting for the lock must be left to say why it cannot run.
    """
    resolved = os.fspath(Path(run_dir).resolve())
    title = f'{TASK_SERVER_TITLE} {resolved}'
    try:
        own = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:  # pragma: no cover
        own = {os.getpid()}
    found = []
    for proc in psutil.process_iter(['pid', 'cmdline', 'status']):
        try:
            if proc.pid in own or proc.info['status'] == psutil.STATUS_ZOMBIE:
                continue
            if ' '.join(proc.info['cmdline'] or []).strip() == title or \
                    proc.environ().get(RUN_DIR_VARIABLE) == resolved:
                found.append(proc)
        except psutil.Error:  # Gone, or another user's
            continue
    return found


@contextmanager
def mark_run_processes(run_dir: os.PathLike) -> Iterator[None]:
    """Set :data:`RUN_DIR_VARIABLE` for the processes started meanwhile (the task server, Parsl's processes)"""
    previous = os.environ.get(RUN_DIR_VARIABLE)
    os.environ[RUN_DIR_VARIABLE] = os.fspath(Path(run_dir).resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_VARIABLE, None)
        else:
            os.environ[RUN_DIR_VARIABLE] = previous


def stop_stale_processes(run_dir: os.PathLike, when: str) -> List[int]:
    """Kill the processes of a run (see :func:`processes_of_run`) and say so in one warning

    Args:
        run_dir: Run directory
        when: What they outlived, for the message (e.g. 'an earlier session of this run')
    Returns:
        Their PIDs
    """
    stale = processes_of_run(run_dir)
    if not stale:
        return []
    pids = [p.pid for p in stale]
    logger.warning(f'{len(stale)} process(es) of {when} were still alive (PIDs {", ".join(map(str, pids))}); '
                   f'stopped them')
    kill_processes(stale)
    return pids


def check_path_for_parsl() -> None:
    """Make sure Parsl's helper programs (``interchange.py``, ``process_worker_pool.py``) are on PATH

    They are installed beside the Python interpreter; a virtual environment used without activation
    would otherwise fail with ``FileNotFoundError: 'interchange.py'`` inside the task server.
    """
    bindir = os.path.dirname(os.path.abspath(os.path.realpath(sys.executable)))
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    path = os.environ.get('PATH', '').split(os.pathsep)
    for d in (bindir, venv_bin):
        if d not in path:
            path.insert(0, d)
    os.environ['PATH'] = os.pathsep.join(path)
