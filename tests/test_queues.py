"""The Colmena queues of the application: a big ML request never holds up a QC request"""
import threading
import time

import pytest
from colmena.exceptions import KillSignalException, TimeoutException

from moldesign.steer.queues import TOPICS, ThreadSafePipeQueues


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
