"""The Colmena queues of the application: a big ML request never holds up a QC request; Redis waits below 1 s"""
import threading
import time

import pytest
from colmena.exceptions import KillSignalException, TimeoutException

from moldesign.steer.queues import TOPICS, AuthRedisQueues, ThreadSafePipeQueues


def test_a_big_ml_request_does_not_block_qc_requests():
    queues = ThreadSafePipeQueues(topics=TOPICS)
    big = threading.Thread(target=queues.send_inputs, args=('x' * 5_000_000,),
                           kwargs={'method': 'rank_candidates', 'topic': 'ML'}, daemon=True)
    big.start()  # Blocks in the pipe until the task server reads it
    time.sleep(0.2)
    assert big.is_alive()
    small = threading.Thread(target=queues.send_inputs, args=('CCO',),
                             kwargs={'method': 'compute_atomization_energy', 'topic': 'simulator'}, daemon=True)
    small.start()
    small.join(2)
    assert not small.is_alive(), 'the QC request waited for the ML request'
    topic, task = queues.get_task(timeout=1)  # QC requests come first
    assert topic == 'simulator' and task.method == 'compute_atomization_energy'
    topic, task = queues.get_task(timeout=5)
    assert topic == 'ML' and task.method == 'rank_candidates'
    big.join(5)
    queues.send_kill_signal()
    with pytest.raises(KillSignalException):
        queues.get_task(timeout=1)
    with pytest.raises(TimeoutException):
        queues.get_task(timeout=0.05)


class _Spy:
    """Records the blocking and non-blocking pops a Redis client is asked for"""

    def __init__(self, client):
        self.client, self.calls = client, []

    def lpop(self, queue):
        self.calls.append(('lpop', None))
        return self.client.lpop(queue)

    def blpop(self, queue, timeout):
        self.calls.append(('blpop', timeout))
        return self.client.blpop(queue, timeout=timeout)


def test_redis_waits_are_not_rounded_up_to_a_second(redis_port, caplog):
    """Colmena 0.7.2 makes every Redis wait at least 1 s; the consumer waits 0.1 s, then takes what is there"""
    queues = AuthRedisQueues(TOPICS, '127.0.0.1', redis_port, prefix='test')
    spy = queues.redis_client = _Spy(queues.redis_client)
    for timeout in (0, 0.1):
        with pytest.raises(TimeoutException):
            queues.get_result(topic='simulator', timeout=timeout)
    assert spy.calls == [('lpop', None), ('blpop', 0.1)]
    assert 'less than 1s' not in caplog.text
    queues.redis_client = spy.client
    queues.send_inputs('CCO', method='compute_atomization_energy', topic='simulator')
    topic, task = queues.get_task(timeout=0)
    assert topic == 'simulator' and task.method == 'compute_atomization_energy'
