"""Assemble the Colmena queues and the Parsl task server, and shut them down without leaving processes.

QC methods run on the Parsl executor labelled ``qc``; ML methods (RL generation, screening) on ``ml``.
The task server is a child process (forked) that loads Parsl itself; it ignores SIGINT so a Ctrl-C
at the terminal reaches only the thinker, which drains the work and then stops the server.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from functools import update_wrapper
from typing import Callable, Collection, List, Optional

import parsl
from colmena.exceptions import TimeoutException
from colmena.models import Result
from colmena.queue.base import ColmenaQueues
from colmena.queue.python import PipeQueues
from colmena.queue.redis import RedisQueues
from colmena.task_server.parsl import ParslTaskServer
from parsl.config import Config

logger = logging.getLogger(__name__)

TOPICS = ('simulator', 'ML')
"""Colmena topics: QC results go to the task consumer (simulator), ML results to the generator (ML)"""
QC_METHODS = ('compute_reference_energy', 'compute_atomization_energy')
ML_METHODS = ('generate_molecules', 'compute_score')

PARSL_SHUTDOWN_TIMEOUT = 5.
"""Seconds the task server gives Parsl to shut down before it kills Parsl's processes"""


class QCTimeout(TimeoutError):
    """A QC task ran longer than its time limit"""


def time_limited(func: Callable, seconds: Optional[float]) -> Callable:
    """Wrap a worker function so it raises :class:`QCTimeout` after ``seconds`` of wall time

    Uses SIGALRM, so it acts only when the task runs in the main thread of its worker process
    (as in Parsl's HighThroughputExecutor); elsewhere the function runs without a limit.

    Args:
        func: Function to wrap (its name is kept: Colmena names methods after ``__name__``)
        seconds: Time limit; None or 0 for none
    Returns:
        The wrapped function
    """
    if not seconds:
        return func

    def wrapper(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return func(*args, **kwargs)

        def _alarm(signum, frame):
            raise QCTimeout(f'{func.__name__} exceeded the QC time limit of {seconds:g} s')

        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return func(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    return update_wrapper(wrapper, func)


class ThreadSafePipeQueues(PipeQueues):
    """Colmena's pipe queues, safe when several threads send at once

    Colmena 0.7.2 writes to one ``multiprocessing`` pipe from every thread without a lock: the generator
    (sending a MolDQN agent of a few MB) and the consumer (sending a QC task) interleave their bytes and
    the task server dies with ``UnicodeDecodeError``/``UnpicklingError``. The same holds for Parsl's
    callback threads sending results back. Each direction gets a lock here.
    """

    def __init__(self, topics: Collection[str] = ()):
        super().__init__(topics)
        self._init_locks()

    def _init_locks(self):
        self._request_lock = threading.Lock()
        self._result_lock = threading.Lock()

    def __getstate__(self):
        state = super().__getstate__()
        state.pop('_request_lock', None)
        state.pop('_result_lock', None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._init_locks()

    def _send_request(self, message: str, topic: str):
        with self._request_lock:
            super()._send_request(message, topic)

    def _send_result(self, message: str, topic: str):
        with self._result_lock:
            super()._send_result(message, topic)


class AuthRedisQueues(RedisQueues):
    """Colmena's Redis queues with a password and a bounded connection time

    Args:
        topics: Topics of the queue
        hostname: Redis host
        port: Redis port
        prefix: Name of this run's queues on the server
        password: Redis password (``requirepass``), if the server needs one
        connect_timeout: Seconds before giving up on connecting
    """

    def __init__(self, topics: Collection[str], hostname: str, port: int, prefix: str,
                 password: Optional[str] = None, connect_timeout: float = 5.0):
        self.password = password
        self.connect_timeout = connect_timeout
        super().__init__(topics, hostname=hostname, port=port, prefix=prefix)

    def connect(self):
        import redis
        if self.redis_client:
            return
        client = redis.StrictRedis(host=self.hostname, port=self.port, password=self.password,
                                   decode_responses=True, socket_connect_timeout=self.connect_timeout)
        try:
            client.ping()
        except redis.exceptions.AuthenticationError as exc:
            raise ConnectionError(f'Redis at {self.hostname}:{self.port} refused the password: {exc} '
                                  f'(set --redis-password or MOLDESIGN_REDIS_PASSWORD)') from None
        except redis.exceptions.ResponseError as exc:
            if 'NOAUTH' in str(exc) or 'AUTH' in str(exc):
                raise ConnectionError(f'Redis at {self.hostname}:{self.port} needs a password: {exc} '
                                      f'(set --redis-password or MOLDESIGN_REDIS_PASSWORD)') from None
            raise
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise ConnectionError(f'Cannot reach Redis at {self.hostname}:{self.port}: {exc}') from None
        self.redis_client = client


def make_queues(redis_host: Optional[str] = None, redis_port: int = 6379, redis_password: Optional[str] = None,
                prefix: str = 'moldesign') -> ColmenaQueues:
    """Queues between thinker and task server: pipes on one host, Redis across hosts

    Args:
        redis_host: Redis host; None for pipes (thinker and task server on this host)
        redis_port: Redis port
        redis_password: Redis password
        prefix: Name of the run's queues on the Redis server
    Returns:
        Queues with topics ``simulator`` and ``ML`` (pickle serialisation)
    """
    if redis_host is None:
        return ThreadSafePipeQueues(topics=TOPICS)
    return AuthRedisQueues(TOPICS, hostname=redis_host, port=redis_port, prefix=prefix, password=redis_password)


class TaskServer(ParslTaskServer):
    """Colmena's Parsl task server, made safe to stop

    - ignores SIGINT (a Ctrl-C at the terminal goes to the whole process group: the thinker decides);
    - on the kill signal, shuts Parsl down without waiting for tasks the thinker no longer waits for.
      Parsl's HTEX shutdown can hang joining its result thread when a task (e.g. a MolDQN call the
      generator abandoned at the end of the run) is still running; after ``PARSL_SHUTDOWN_TIMEOUT``
      seconds the executors' processes (interchanges, worker pools) are killed instead.
    """

    def run(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            super().run()
        except BaseException:
            logger.exception('Task server failed; shutting Parsl down')
            try:
                parsl.dfk().cleanup()  # Otherwise the worker pools outlive us
            except Exception:
                pass
            raise

    def _cleanup(self):
        done = threading.Event()

        def _shutdown():
            parsl.dfk().cleanup()
            done.set()

        threading.Thread(target=_shutdown, name='parsl-cleanup', daemon=True).start()
        if done.wait(PARSL_SHUTDOWN_TIMEOUT):
            logger.info('Parsl shut down')
            return
        logger.warning(f'Parsl did not shut down within {PARSL_SHUTDOWN_TIMEOUT:.0f} s (a task the thinker no '
                       'longer waits for is still running); killing its processes')
        import psutil
        for child in psutil.Process(os.getpid()).children():
            kill_process_tree(child.pid)  # With its descendants


def make_task_server(queues: ColmenaQueues, config: Config, qc_timeout: Optional[float] = None) -> TaskServer:
    """Map the QC methods to executor ``qc`` and the ML methods to ``ml``

    Args:
        queues: Server side of the queues
        config: Parsl configuration with executors labelled ``qc`` and ``ml``
        qc_timeout: Wall-time limit of one QC task in seconds (None: none)
    Returns:
        The task server (not started)
    """
    from moldesign.sample import generate_molecules
    from moldesign.score import compute_score
    from moldesign.simulate import compute_atomization_energy, compute_reference_energy

    labels = {e.label for e in config.executors}
    missing = {'qc', 'ml'} - labels
    if missing:
        raise ValueError(f'The Parsl configuration lacks executor(s) labelled {", ".join(sorted(missing))} '
                         f'(has: {", ".join(sorted(labels))})')
    methods = [(time_limited(f, qc_timeout), {'executors': ['qc']})
               for f in (compute_reference_energy, compute_atomization_energy)]
    methods += [(f, {'executors': ['ml']}) for f in (generate_molecules, compute_score)]
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
            for result in _pending_results(queues):
                logger.info(f'Result of {result.method} arrived while stopping')
                if on_result is not None:
                    on_result(result)
            server.join(0.05)
    if server.is_alive():
        logger.warning(f'Task server did not stop within {timeout:.0f} s; killing its processes')
        kill_process_tree(server.pid)
        server.join(5)
    logger.info(f'Task server stopped (exit code {server.exitcode})')


def _pending_results(queues: ColmenaQueues) -> List[Result]:
    """Every result waiting in the queues (none if they cannot be read any more)"""
    found = []
    for topic in TOPICS:
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
    import psutil
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = parent.children(recursive=True) + [parent]
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


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
