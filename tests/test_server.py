"""The task server's plumbing: stopping it, the thread-safe pipe queues, the QC time limit, the node of a task.

Colmena's local task server stands in for the Parsl one where the point is the pipes between the task server
and the thinker, which are the same for both.
"""
import os
import threading
import time

import pytest
from colmena.exceptions import TimeoutException
from colmena.models import Result
from colmena.task_server.local import LocalTaskServer

from moldesign.steer.queues import TOPICS, ThreadSafePipeQueues
from moldesign.steer.server import NodeAwareMethod, QCTimeout, stop_task_server, time_limited


def make_text(n: int) -> str:
    return 'x' * n


def echo(value):
    return value


def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_stop_reads_a_result_larger_than_the_pipe():
    queues = ThreadSafePipeQueues(topics=TOPICS)
    server = LocalTaskServer(queues, [make_text], threads=True, num_workers=1)
    server.start()
    try:
        queues.send_inputs(4_000_000, method='make_text', topic='ML')  # 4 MB: the sender blocks until read
        assert queues.result_queues['ML'][0].poll(60), 'the task did not finish'
        got = []
        stop_task_server(server, queues, timeout=60, on_result=got.append)
    finally:
        if server.is_alive():
            server.kill()
    assert [r.method for r in got] == ['make_text'] and len(got[0].value) == 4_000_000
    assert not server.is_alive() and server.exitcode == 0  # Stopped by itself, not killed after the timeout


def test_concurrent_senders_do_not_garble_the_pipes():
    """Four threads send requests at once (large and small); the server reads every one intact"""
    queues = ThreadSafePipeQueues(topics=TOPICS)
    server = LocalTaskServer(queues, [echo], threads=True, num_workers=2)
    server.start()
    try:
        def send(thread: int):
            for i in range(25):
                payload = (thread, i, 'y' * (200_000 if i % 5 == 0 else 10))
                queues.send_inputs(payload, method='echo', topic='simulator' if thread % 2 else 'ML')

        threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        received = []
        deadline = time.monotonic() + 120
        while len(received) < 100 and time.monotonic() < deadline:
            for topic in TOPICS:
                try:
                    received.append(queues.get_result(topic=topic, timeout=0.05))
                except TimeoutException:
                    pass
        for t in threads:
            t.join()
    finally:
        queues.send_kill_signal()
        server.join(30)
    assert len(received) == 100 and all(r.success for r in received)
    assert sorted((r.value[0], r.value[1]) for r in received) == [(t, i) for t in range(4) for i in range(25)]


def test_a_blocked_ml_result_does_not_hold_up_qc_results():
    """The ML pipe is full and unread (a multi-MB MolDQN agent); a QC result still reaches the thinker at once"""
    queues = ThreadSafePipeQueues(topics=TOPICS)
    server = LocalTaskServer(queues, [make_text, echo], threads=True, num_workers=2)
    server.start()
    try:
        queues.send_inputs(8_000_000, method='make_text', topic='ML')  # Nobody reads ML in this test
        time.sleep(2)  # Its sender is now blocked, holding the ML pipe
        start = time.monotonic()
        queues.send_inputs('qc', method='echo', topic='simulator')
        result = queues.get_result(topic='simulator', timeout=30)
        latency = time.monotonic() - start
    finally:
        got = []
        stop_task_server(server, queues, timeout=60, on_result=got.append)
    assert result.value == 'qc' and latency < 10, latency
    assert [r.method for r in got] == ['make_text']


def test_time_limit_raises_in_the_main_thread_only():
    limited = time_limited(sleepy, 0.3)
    assert limited.__name__ == 'sleepy'  # Colmena names the method after the function
    start = time.monotonic()
    with pytest.raises(QCTimeout, match='0.3 s'):
        limited(5)
    assert time.monotonic() - start < 2
    assert limited(0.01) == 0.01
    assert time_limited(sleepy, 0) is sleepy


def test_node_aware_method_records_the_node(monkeypatch):
    monkeypatch.setenv('SLURMD_NODENAME', 'n3')
    monkeypatch.setenv('PARSL_WORKER_BLOCK_ID', '7')
    result = Result(inputs=((5,), {}), method='echo')
    result.serialize()
    out = NodeAwareMethod(echo)(result)
    out.deserialize()
    assert out.success and out.value == 5
    assert out.worker_info.node == 'n3' and out.worker_info.block == '7'
    monkeypatch.delenv('SLURMD_NODENAME')
    result = Result(inputs=((5,), {}), method='echo')
    result.serialize()
    assert NodeAwareMethod(echo)(result).worker_info.node == os.uname().nodename
