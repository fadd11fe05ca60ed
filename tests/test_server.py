"""Stopping the task server: results nobody waits for must not block the shutdown, and are handed over.

Colmena's local task server (threads) stands in for the Parsl one: the blocking happens in Colmena's
pipe between the task server and the thinker, the same in both.
"""
from colmena.task_server.local import LocalTaskServer

from moldesign.steer.server import TOPICS, ThreadSafePipeQueues, stop_task_server


def make_text(n: int) -> str:
    return 'x' * n


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
