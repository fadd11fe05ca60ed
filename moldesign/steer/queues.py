"""The Colmena queues between the thinker and the task server: pipes on one host, Redis across hosts.

Topics: QC results go to the task consumer (``simulator``), ML results to the steering agent (``ML``).
"""
from __future__ import annotations

import logging
import threading
from multiprocessing import Pipe
from multiprocessing.connection import wait
from typing import Collection, Optional, Tuple

from colmena.exceptions import KillSignalException, TimeoutException
from colmena.queue.base import ColmenaQueues
from colmena.queue.python import PipeQueues
from colmena.queue.redis import RedisQueues

logger = logging.getLogger(__name__)

TOPICS = ('simulator', 'ML')
"""Colmena topics: QC results go to the task consumer (simulator), ML results to the steering agent (ML)"""


class ThreadSafePipeQueues(PipeQueues):
    """Colmena's pipe queues, safe when several threads send or receive at once, with one request pipe per topic

    Colmena 0.7.2 writes to its pipes from every thread without a lock: two threads sending at once interleave
    their bytes and the reader dies with ``UnicodeDecodeError``/``UnpicklingError``. Each pipe gets its own lock.
    Each topic has its own result pipe and its own request pipe: a multi-MB MolDQN agent or screening (the whole
    training set and candidate pool) being written into the ``ML`` pipes (at the pace the other side reads them:
    ~0.1-0.2 s on a busy machine) never holds up a QC request or result on ``simulator``.
    """

    def __init__(self, topics: Collection[str] = ()):
        super().__init__(topics)
        self.request_queues = {t: Pipe(duplex=False) for t in self.topics}
        self._init_locks()

    def _init_locks(self):
        self._request_locks = {t: threading.Lock() for t in self.request_queues}
        self._result_locks = {t: threading.Lock() for t in self.result_queues}
        self._receive_locks = {t: threading.Lock() for t in self.result_queues}

    def __getstate__(self):
        state = super().__getstate__()
        for name in ('_request_locks', '_result_locks', '_receive_locks'):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._init_locks()

    def _send_request(self, message: str, topic: str):
        with self._request_locks[topic]:
            self.request_queues[topic][1].send((topic, message))

    def _get_request(self, timeout: int = None) -> Tuple[str, str]:
        readers = [self.request_queues[t][0] for t in sorted(self.request_queues, key=lambda t: t != 'simulator')]
        ready = wait(readers, timeout)  # QC requests first when several topics have one
        if not ready:
            raise TimeoutException()
        message = next(r for r in readers if r in ready).recv()
        if message[1] == 'null':
            raise KillSignalException()
        return message

    def _send_result(self, message: str, topic: str):
        with self._result_locks[topic]:
            super()._send_result(message, topic)

    def _get_result(self, topic: str, timeout: int = None) -> str:
        with self._receive_locks[topic]:
            return super()._get_result(topic, timeout)

    def flush(self):
        super().flush()
        for reader, _ in self.request_queues.values():
            while reader.poll():
                reader.recv()


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

    def _get_message(self, queue: str, timeout: Optional[float]) -> str:
        """Colmena's, with timeouts below one second (Colmena 0.7.2 makes them 1 s and logs a warning each time)

        The task consumer waits 0.1 s for a result, then takes whatever else has arrived without waiting
        (``timeout=0``); rounded up to 1 s, each group of results waited a second before being handled.

        Args:
            queue: Name of the Redis list
            timeout: Seconds to wait (None: forever; 0: do not wait)
        Raises:
            TimeoutException: if nothing arrived in time
        """
        import redis
        try:
            if timeout is not None and timeout <= 0:
                output = self.redis_client.lpop(queue)
                if output is None:
                    raise TimeoutException()
                return output
            output = self.redis_client.blpop(queue, timeout=0 if timeout is None else timeout)
            if output is None:
                raise TimeoutException()
            return output[1]
        except redis.exceptions.ConnectionError:
            logger.warning(f'ConnectionError while reading from Redis at {self.hostname}:{self.port}')
            raise


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
    Raises:
        ConnectionError: if the Redis server cannot be reached or refuses the password
    """
    if redis_host is None:
        return ThreadSafePipeQueues(topics=TOPICS)
    return AuthRedisQueues(TOPICS, hostname=redis_host, port=redis_port, prefix=prefix, password=redis_password)
