"""Fixtures shared by the test modules: a real redis-server on loopback"""
import pytest

from moldesign.steer.redis_local import local_redis

REDIS_PASSWORD = 'test-secret-pw'


@pytest.fixture
def redis_port(tmp_path):
    """A redis-server on a free loopback port, without a password"""
    try:
        with local_redis(tmp_path) as port:
            yield port
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server on a free loopback port, with a password: (port, password)"""
    try:
        with local_redis(tmp_path, password=REDIS_PASSWORD) as port:
            yield port, REDIS_PASSWORD
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
