"""The priority queue shared by the generator and the consumer"""
import threading
import time

from moldesign.steer.queue import Candidate, CandidateQueue


def test_recency_then_rank():
    queue = CandidateQueue()
    queue.push_batch([Candidate('C', batch=0, rank=0), Candidate('CC', batch=0, rank=1)])
    queue.push_batch([Candidate('CCC', batch=1, rank=1), Candidate('CCO', batch=1, rank=0)])
    order = [queue.pop().smiles for _ in range(4)]
    assert order == ['CCO', 'CCC', 'C', 'CC']  # Newest batch first, best rank first within it
    assert queue.pop() is None and len(queue) == 0


def test_falls_back_to_older_batches():
    queue = CandidateQueue()
    queue.push_batch([Candidate(s, batch=0, rank=i) for i, s in enumerate(['C', 'N', 'O'])])
    queue.push_batch([Candidate('CC', batch=1, rank=0)])
    assert queue.pop().smiles == 'CC'
    assert [queue.pop().smiles for _ in range(3)] == ['C', 'N', 'O']


def test_newer_batch_supersedes_same_molecule():
    queue = CandidateQueue()
    queue.push_batch([Candidate('C', batch=0, rank=0), Candidate('CC', batch=0, rank=1)])
    queue.push_batch([Candidate('CC', batch=1, rank=3, predicted=-5.)])
    assert len(queue) == 2
    first = queue.pop()
    assert (first.smiles, first.batch, first.predicted) == ('CC', 1, -5.)
    assert queue.pop().smiles == 'C'
    assert queue.pop() is None  # The superseded CC entry is not returned twice


def test_discard_and_contains():
    queue = CandidateQueue()
    queue.push(Candidate('C', batch=0, rank=0))
    assert 'C' in queue
    queue.discard('C')
    assert 'C' not in queue and queue.pop() is None


def test_pop_waits_for_push():
    queue = CandidateQueue()
    threading.Timer(0.2, lambda: queue.push(Candidate('O', batch=2, rank=0))).start()
    start = time.monotonic()
    got = queue.pop(timeout=5)
    assert got is not None and got.smiles == 'O'
    assert time.monotonic() - start < 5
    assert queue.pop(timeout=0.05) is None  # Times out when nothing arrives
