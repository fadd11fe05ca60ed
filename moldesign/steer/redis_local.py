"""A throw-away ``redis-server`` on a free loopback port, for Redis queues on one host (tests, benchmarks, trials).

On a cluster the Redis server is the site's or one the user starts on the thinker's host (``docs/cluster.md``);
this one is for trying ``--redishost`` on one machine: no persistence, stopped when the ``with`` block ends.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port free on loopback now (another process may take it before it is used)"""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_redis(directory: Path, password: Optional[str] = None, timeout: float = 10) -> Iterator[int]:
    """Run a ``redis-server`` on loopback while the block runs

    Args:
        directory: Its working directory (nothing is written there: no snapshots, no append-only file)
        password: Clients must send this password (``--requirepass``), if given
        timeout: Seconds to wait for it to accept connections
    Yields:
        Its port
    Raises:
        FileNotFoundError: ``redis-server`` is not installed
        RuntimeError: It did not accept connections in time
    """
    executable = shutil.which('redis-server')
    if executable is None:
        raise FileNotFoundError('redis-server is not installed (apt-get install redis-server)')
    port = free_port()
    command = [executable, '--port', str(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
               '--dir', str(directory)]
    if password:
        command += ['--requirepass', password]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f'redis-server did not accept connections on port {port} '
                                       f'(exit code {proc.poll()})')
                time.sleep(0.05)
        logger.info(f'redis-server (PID {proc.pid}) on 127.0.0.1:{port}')
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
