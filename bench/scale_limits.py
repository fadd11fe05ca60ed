"""Per-result costs of the pieces between the thinker and the workers, for the limits in ``docs/scaling.md``.

Each part runs alone (no campaign), one after the other:

- ``queues``: Colmena queues, thinker -> task server -> thinker, with the application's QC task inputs
  (SMILES, QC specification, reference energies) and result (an ``AtomizationRecord``): an echo process takes each
  task, deserialises it, sets the stored result, serialises it and sends it back (Colmena's own ``Result`` calls).
  Round trip one at a time (latency) and with 256 tasks in flight (throughput), for the pipes and for
  ``RedisQueues`` on a local ``redis-server`` (started here on a free port, stopped at the end);
- ``parsl``: Parsl's own throughput for no-op tasks: the DataFlowKernel with a ``ThreadPoolExecutor`` (no
  interchange), and an HTEX executor (interchange + one local worker pool of 2 workers), 2,000 tasks each;
- ``records``: the thinker's work per QC result apart from the queues: a record line from a Colmena result
  (``molecule_record``), appended and synced by ``RunStore`` in groups of 1, 16 and 256.

    python bench/scale_limits.py                  # all parts (~2 min)
    python bench/scale_limits.py --parts queues   # one part

Writes ``bench/results/scale_limits.json``. Every figure is from this run, on this (shared) machine.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

common.use_this_checkout()

import numpy as np  # noqa: E402

PARTS = ('queues', 'parsl', 'records')


def _qc_inputs():
    from moldesign.simulate import get_spec
    refs = {'H': -0.393482763936, 'C': -1.793296371365, 'N': -2.605824161279, 'O': -3.767606950376,
            'F': -4.619339964125}
    return ('CC(C)CCC(C)(C)C', get_spec('xtb'), refs)


def _qc_value():
    from moldesign.simulate import AtomizationRecord
    xyz = '29\nCC(C)CCC(C)(C)C\n' + ''.join(f'C {i:14.8f} {0.3 * i:14.8f} {-0.2 * i:14.8f}\n' for i in range(29))
    return AtomizationRecord(smiles='CC(C)CCC(C)(C)C', formula='C9H20', n_atoms=29, n_heavy_atoms=9,
                             total_energy=-29.1, atomization_energy=-2734.7, atomization_energy_hartree=-4.358,
                             atomization_energy_per_atom=-94.3, xyz=xyz, n_steps=14, qc_spec='xtb',
                             program='xtb', method='gfn2-xtb', basis=None, program_version='6.5.1', walltime=0.1)


# ---------------------------------------------------------------------------------------------- queues
def _echo_server(queues) -> None:
    """Answer every task with the stored QC record, through Colmena's Result calls"""
    from colmena.exceptions import KillSignalException, TimeoutException
    queues.set_role('server')
    value = _qc_value()
    while True:
        try:
            topic, task = queues.get_task(timeout=30)
        except (KillSignalException, TimeoutException):
            return
        task.mark_compute_started()
        task.deserialize()
        task.set_result(value, 0.)
        task.mark_compute_ended()
        task.serialize()
        queues.send_result(task)


def queue_roundtrip(queues, n_serial: int = 500, n_pipelined: int = 5000, window: int = 256) -> Dict[str, float]:
    """Round-trip latency (one task at a time) and throughput (``window`` tasks in flight) of Colmena queues"""
    from moldesign.steer.queues import TOPICS  # noqa: F401  (topics of the application)
    args = _qc_inputs()
    multiprocessing.set_start_method('fork', force=True)
    server = multiprocessing.Process(target=_echo_server, args=(queues,), daemon=True)
    server.start()
    try:
        for _ in range(50):  # Warm-up
            queues.send_inputs(*args, method='compute_atomization_energy', topic='simulator', keep_inputs=False)
            queues.get_result(topic='simulator', timeout=10)
        latencies = []
        for _ in range(n_serial):
            start = time.perf_counter()
            queues.send_inputs(*args, method='compute_atomization_energy', topic='simulator', keep_inputs=False)
            queues.get_result(topic='simulator', timeout=10)
            latencies.append(time.perf_counter() - start)
        cpu0, start = time.process_time(), time.perf_counter()
        done = threading.Semaphore(window)

        def _send():
            for _ in range(n_pipelined):
                done.acquire()
                queues.send_inputs(*args, method='compute_atomization_energy', topic='simulator', keep_inputs=False)

        sender = threading.Thread(target=_send, daemon=True)
        sender.start()
        for _ in range(n_pipelined):
            queues.get_result(topic='simulator', timeout=30)
            done.release()
        sender.join()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        lat = np.array(latencies) * 1e3
        return {'latency_p50_ms': float(np.median(lat)), 'latency_p99_ms': float(np.percentile(lat, 99)),
                'throughput_per_s': n_pipelined / elapsed, 'client_cpu_ms_per_task': cpu / n_pipelined * 1e3}
    finally:
        queues.send_kill_signal()
        server.join(10)
        if server.is_alive():
            server.kill()


def part_queues() -> Dict[str, Any]:
    from moldesign.steer.queues import TOPICS, AuthRedisQueues, ThreadSafePipeQueues
    from moldesign.steer.redis_local import local_redis
    out = {'pipes': queue_roundtrip(ThreadSafePipeQueues(topics=TOPICS))}
    work = tempfile.mkdtemp(prefix='bench-redis-')
    try:
        with local_redis(Path(work)) as port:
            out['redis'] = queue_roundtrip(AuthRedisQueues(TOPICS, '127.0.0.1', port, prefix='bench'))
    except FileNotFoundError as exc:
        out['redis'] = {'error': str(exc)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------- parsl
def _noop(x):
    return x


def _parsl_throughput(executor, n: int) -> Dict[str, float]:
    import parsl
    from parsl.config import Config
    run_dir = tempfile.mkdtemp(prefix='bench-parsl-')
    dfk = parsl.load(Config(executors=[executor], run_dir=run_dir, strategy='none', initialize_logging=False))
    try:
        app = parsl.python_app(_noop, executors=[executor.label])
        for f in [app(i) for i in range(100)]:  # Warm-up (worker start)
            f.result()
        cpu0, start = time.process_time(), time.perf_counter()
        futures = [app(i) for i in range(n)]
        submitted = time.perf_counter() - start
        for f in futures:
            f.result()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        serial = []
        for i in range(200):
            t = time.perf_counter()
            app(i).result()
            serial.append(time.perf_counter() - t)
        return {'tasks_per_s': n / elapsed, 'submit_per_s': n / submitted, 'dfk_cpu_ms_per_task': cpu / n * 1e3,
                'roundtrip_p50_ms': float(np.median(serial) * 1e3)}
    finally:
        dfk.cleanup()
        parsl.clear()
        shutil.rmtree(run_dir, ignore_errors=True)


def part_parsl(n: int = 2000) -> Dict[str, Any]:
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
    from parsl.providers import LocalProvider
    from moldesign.steer.server import check_path_for_parsl
    check_path_for_parsl()
    out = {'threads': _parsl_throughput(ThreadPoolExecutor(label='qc', max_threads=8), n)}
    htex = HighThroughputExecutor(label='qc', address='127.0.0.1', max_workers_per_node=2, cores_per_worker=1e-6,
                                  provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))
    out['htex'] = _parsl_throughput(htex, n)
    return out


# ---------------------------------------------------------------------------------------------- records
def part_records(n: int = 4096) -> Dict[str, Any]:
    from colmena.models import Result
    from moldesign.steer.records import molecule_record
    from moldesign.store import RunStore
    args = _qc_inputs()
    value = _qc_value()
    result = Result.from_args_and_kwargs(args, keep_inputs=False, method='compute_atomization_energy',
                                         topic='simulator', serialization_method='pickle')
    result.serialize()
    result.set_result(value, 0.1)
    for name in ('created', 'compute_started', 'compute_ended', 'result_sent', 'result_received'):
        setattr(result.timestamp, name, time.time())
    info = {'smiles': args[0], 'phase': 'steered', 'batch': 12, 'rank': 3, 'predicted': -2730.1,
            'predicted_std': 4.2, 'source': 'neighbours', 'qc_spec': 'xtb'}
    start = time.process_time()
    records = [molecule_record(result, info, value.model_dump(mode='json'), 'atomization_energy', i)
               for i in range(n)]
    make_ms = (time.process_time() - start) / n * 1e3
    out: Dict[str, Any] = {'make_record_cpu_ms': make_ms}
    for group in (1, 16, 256):
        work = Path(tempfile.mkdtemp(prefix='bench-records-'))
        store = RunStore(work / 'run')
        try:
            cpu0, start = time.process_time(), time.perf_counter()
            for i in range(0, n, group):
                for record in records[i:i + group]:
                    store.append('simulation_records.jsonld', record, sync=False)
                store.sync()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
            out[f'group_{group}'] = {'records_per_s': n / elapsed, 'cpu_ms_per_record': cpu / n * 1e3,
                                     'wall_ms_per_record': elapsed / n * 1e3}
        finally:
            store.close()
            shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--parts', nargs='+', choices=PARTS, default=list(PARTS))
    parser.add_argument('--results', type=Path, default=None, help='JSON output (default bench/results/...)')
    args = parser.parse_args(argv)
    machine = common.machine_info()
    print(f'machine: {machine["nproc"]} cores, {machine["cpu_model"]}, load average {machine["loadavg_at_start"]} '
          f'(shared machine: timings are noisy)', flush=True)
    results: Dict[str, Any] = {'machine': machine}
    if 'queues' in args.parts:
        results['queues'] = q = part_queues()
        for kind, r in q.items():
            if 'error' in r:
                print(f'queues {kind}: {r["error"]}')
                continue
            print(f'queues {kind:<5s}: round trip p50 {r["latency_p50_ms"]:.2f} ms, p99 {r["latency_p99_ms"]:.2f} ms; '
                  f'{r["throughput_per_s"]:.0f} tasks/s with 256 in flight; client CPU '
                  f'{r["client_cpu_ms_per_task"]:.2f} ms per task', flush=True)
    if 'parsl' in args.parts:
        results['parsl'] = p = part_parsl()
        for kind, r in p.items():
            print(f'parsl {kind:<7s}: {r["tasks_per_s"]:.0f} no-op tasks/s (submission {r["submit_per_s"]:.0f}/s), '
                  f'DFK process CPU {r["dfk_cpu_ms_per_task"]:.2f} ms per task, round trip p50 '
                  f'{r["roundtrip_p50_ms"]:.2f} ms', flush=True)
    if 'records' in args.parts:
        results['records'] = r = part_records()
        print(f'records: making one from a result {r["make_record_cpu_ms"]:.3f} ms CPU; ' + '; '.join(
            f'synced in groups of {g.split("_")[1]}: {v["records_per_s"]:.0f}/s ({v["cpu_ms_per_record"]:.3f} ms CPU '
            f'per record)' for g, v in r.items() if g.startswith('group_')), flush=True)
    results['loadavg_at_end'] = ' '.join(f'{x:.2f}' for x in os.getloadavg())
    if args.results is not None:
        from moldesign.store import dump_json
        dump_json(results, args.results)
        path = args.results
    else:
        path = common.write_results('scale_limits', results)
    print(f'Results: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
