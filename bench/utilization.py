"""QC worker utilization and Colmena + Parsl overhead: the interleaved application against the batch baseline.

Both modes run ``run.py`` with the same QC (GFN2-xTB), budget, seed and configuration, one after the
other in this script (never at the same time); the order alternates between seeds to spread drifts of
the machine's load over both. The baseline is ``run.py --batch-baseline``: the generator waits until
its previous selection is evaluated, so QC idles while the ML tasks (training, MolDQN, scoring) run.

Figures, from the records' timestamps (steered phase only):

- QC worker utilization: ``moldesign.report.data.qc_utilization(records, qc_workers)``: busy
  slot time / available slot time between the first start and the last end of a steered QC task;
- overhead per QC task: ``result_received - created - time.running - queue wait`` (submission, Parsl
  HTEX round trip, serialisation, the thinker's wait for the result), in ms and as a % of
  ``time.running``, split into *to worker* (``compute_started - created - queue wait``) and *back*
  (``result_received - compute_ended``). The queue wait is the time a prefetched task waits for the
  previous task on its worker to end (``--qc-prefetch``): the worker is computing then, so it is not
  overhead; its median is reported apart.

    python bench/utilization.py             # seeds 1 and 2, 8 initial + 40 steered molecules
    python bench/utilization.py --quick     # smoke: seed 1, 4 + 8 molecules
    python bench/utilization.py --app-args '--qc-bundle 4'   # 4 molecules per QC task

Both modes run without verification (``--verify-qc none``, unless ``--app-args`` names one): run.py verifies
the best molecules of a GFN2-xTB search at the B3LYP level by default, but not with ``--batch-baseline``, and
minutes of DFT per molecule would dwarf the search being measured.

Targets: interleaved utilization >= 0.95 and >= 1.3x the baseline; median overhead <= 20 ms and <= 2 %
of QC time. Writes ``bench/results/utilization.json``. The LAST line is the utilization ratio
(interleaved / baseline).
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import numpy as np  # noqa: E402

MODES = {'interleaved': [], 'baseline': ['--batch-baseline']}
"""Mode -> extra run.py arguments"""


def _t(record: dict, name: str) -> Optional[float]:
    from moldesign.report.data import record_time
    return record_time(record, name)


def _slot(record: dict) -> tuple:
    """The worker a task ran on (Colmena records Parsl's worker pool and rank)"""
    info = record.get('worker_info') or {}
    return info.get('hostname'), info.get('PARSL_WORKER_POOL_ID'), info.get('PARSL_WORKER_RANK')


def task_overheads(records: List[dict]) -> Dict[str, np.ndarray]:
    """Overhead of each QC task of the steered phase (seconds)

    The thinker prefetches (a task waits at a busy worker, ``--qc-prefetch``), so the time from creation
    to start includes a *queue wait* for the previous task on the same worker: that wait is not overhead
    (the worker was computing) and is reported apart. Overhead = ``result_received - created - running
    - queue_wait``.

    Args:
        records: QC records of a run (every phase: the previous task on a worker may be an initial one)
    Returns:
        Arrays ``overhead``, ``to_worker`` (creation to start, queue wait excluded), ``back``,
        ``queue_wait`` and ``running`` (one entry per steered task with every timestamp)
    """
    ends: Dict[tuple, List[float]] = {}
    for r in records:
        if (end := _t(r, 'compute_ended')) is not None:
            ends.setdefault(_slot(r), []).append(end)
    out = {k: [] for k in ('overhead', 'to_worker', 'back', 'queue_wait', 'running')}
    for r in records:
        if r.get('phase') != 'steered':
            continue
        created, started, ended, received = (_t(r, k) for k in ('created', 'compute_started', 'compute_ended',
                                                                 'result_received'))
        running = (r.get('time') or {}).get('running')
        if None in (created, started, ended, received) or running is None:
            continue
        previous = max((e for e in ends.get(_slot(r), []) if e <= started), default=created)
        wait = max(0., min(previous, started) - created)
        out['overhead'].append(received - created - running - wait)
        out['to_worker'].append(started - created - wait)
        out['back'].append(received - ended)
        out['queue_wait'].append(wait)
        out['running'].append(running)
    return {k: np.array(v) for k, v in out.items()}


def analyse(run_dir: Path) -> Dict[str, float]:
    """Utilization and overhead figures of one run"""
    from moldesign.report.data import load_run, qc_utilization
    run = load_run(run_dir)
    records = run.molecule_records
    over = task_overheads(run.simulation)
    steered = [r for r in records if r.get('phase') == 'steered']
    ml = [r for r in run.rl + run.screening if r.get('time')]
    return {
        'utilization': qc_utilization(records, run.qc_workers),
        'utilization_whole_run': qc_utilization(run.simulation, run.qc_workers, phase=None),
        'n_batches': len(run.screening),
        'summary_utilization': (run.summary or {}).get('qc_utilization'),
        'qc_workers': run.qc_workers,
        'n_tasks': len(over['overhead']),
        'median_overhead_ms': float(np.median(over['overhead']) * 1e3),
        'mean_overhead_ms': float(np.mean(over['overhead']) * 1e3),
        'median_overhead_pct': float(np.median(over['overhead'] / over['running']) * 100),
        'overhead_pct_of_total': float(over['overhead'].sum() / over['running'].sum() * 100),
        'median_to_worker_ms': float(np.median(over['to_worker']) * 1e3),
        'median_back_ms': float(np.median(over['back']) * 1e3),
        'median_queue_wait_ms': float(np.median(over['queue_wait']) * 1e3),
        'median_running_s': float(np.median(over['running'])),
        'steered_window_s': _window(steered),
        'ml_time_s': float(sum((r['time'].get('running') or 0) for r in ml)),
        'wall_time_s': (run.summary or {}).get('wall_time'),
    }


def _window(records: List[dict]) -> Optional[float]:
    starts = [t for r in records if (t := _t(r, 'compute_started')) is not None]
    ends = [t for r in records if (t := _t(r, 'compute_ended')) is not None]
    return max(ends) - min(starts) if starts and ends else None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='Smoke mode: seed 1, 4 initial + 8 steered molecules')
    parser.add_argument('--seeds', type=int, nargs='+', default=None, help='Seeds (default 1 2; quick 1)')
    parser.add_argument('--objective', choices=common.OBJECTIVES, default='atomization_energy')
    parser.add_argument('--initial-count', type=int, default=None, help='Initial molecules (default 8; quick 4)')
    parser.add_argument('--search-size', type=int, default=None, help='Steered molecules (default 40; quick 8)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='run.py --batch-size for both modes (default: search size / 5, so the baseline '
                             'alternates generator and QC 5 times; at the application default of 64 the baseline '
                             'evaluates one selection and never waits for ML inside the steered phase)')
    parser.add_argument('--app-args', default='', help='Extra run.py arguments for both modes')
    parser.add_argument('--keep-runs', type=Path, default=None, help='Keep the run directories here')
    parser.add_argument('--results-dir', type=Path, default=common.RESULTS_DIR, help='Where the JSON goes')
    parser.add_argument('--timeout', type=float, default=3600, help='Seconds allowed per campaign')
    args = parser.parse_args(argv)

    seeds = args.seeds or ([1] if args.quick else [1, 2])
    initial = args.initial_count if args.initial_count is not None else (4 if args.quick else 8)
    search = args.search_size if args.search_size is not None else (8 if args.quick else 40)
    batch_size = args.batch_size or max(1, search // 5)
    app_args = ['--batch-size', str(batch_size), *shlex.split(args.app_args)]
    if '--verify-qc' not in app_args:  # The search's QC only (run.py verifies by default, not with --batch-baseline)
        app_args += ['--verify-qc', 'none']
    machine = common.machine_info()
    print(f'machine: {machine["nproc"]} cores, {machine["cpu_model"]}, load average {machine["loadavg_at_start"]} '
          f'(shared machine: timings are noisy)')
    qc = app_args[app_args.index('--qc') + 1] if '--qc' in app_args[:-1] else common.METHOD
    print(f'QC: {qc}; {initial} initial + {search} steered molecules; objective {args.objective}; '
          f'seeds {seeds}; extra run.py args: {app_args or "none"}')

    start = time.perf_counter()
    work = common.tmp_work_dir('bench-util-', args.keep_runs)
    runs: Dict[str, List[dict]] = {m: [] for m in MODES}
    try:
        for i, seed in enumerate(seeds):
            order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
            for mode in order:
                out = work / f'{mode}-seed{seed}'
                run_dir = common.run_app(out, ['--initial-count', str(initial), '--search-size', str(search),
                                               '--seed', str(seed), '--objective', args.objective,
                                               *MODES[mode], *app_args], out / 'run.log', timeout=args.timeout)
                figures = {'seed': seed, 'run_dir': str(run_dir), **analyse(run_dir)}
                runs[mode].append(figures)
                print(f'  {mode:<11s} seed {seed}: utilization {figures["utilization"]:.3f}, median overhead '
                      f'{figures["median_overhead_ms"]:.1f} ms ({figures["median_overhead_pct"]:.2f} % of QC time), '
                      f'wall time {figures["wall_time_s"]:.0f} s', flush=True)
    finally:
        common.remove_tmp(work, args.keep_runs)

    print()
    print(f'{"mode":<11s} {"seed":>4s} {"util":>6s} {"whole":>6s} {"rounds":>6s} {"slots":>5s} {"tasks":>5s} '
          f'{"ovh_ms":>7s} {"ovh_%":>6s} {"to_wkr_ms":>9s} {"back_ms":>8s} {"qc_s":>6s} {"ml_s":>6s} {"wall_s":>7s}')
    for mode, rs in runs.items():
        for r in rs:
            print(f'{mode:<11s} {r["seed"]:>4d} {r["utilization"]:>6.3f} {r["utilization_whole_run"]:>6.3f} '
                  f'{r["n_batches"]:>6d} {r["qc_workers"]:>5d} {r["n_tasks"]:>5d} '
                  f'{r["median_overhead_ms"]:>7.1f} {r["median_overhead_pct"]:>6.2f} {r["median_to_worker_ms"]:>9.1f} '
                  f'{r["median_back_ms"]:>8.1f} {r["median_running_s"]:>6.3f} {r["ml_time_s"]:>6.1f} '
                  f'{r["wall_time_s"]:>7.1f}')
    keys = ('utilization', 'utilization_whole_run', 'wall_time_s', 'median_overhead_ms', 'median_overhead_pct',
            'median_running_s')
    med = {m: {k: float(np.median([r[k] for r in rs])) for k in keys} for m, rs in runs.items()}
    ratio = med['interleaved']['utilization'] / med['baseline']['utilization']
    i = med['interleaved']
    print(f'interleaved: median utilization {i["utilization"]:.3f} (target >= 0.95); median overhead per QC task '
          f'{i["median_overhead_ms"]:.1f} ms (target <= 20), {i["median_overhead_pct"]:.2f} % of QC time '
          f'(target <= 2; median QC task {i["median_running_s"]:.2f} s)')
    print(f'baseline:    median utilization {med["baseline"]["utilization"]:.3f}; median overhead '
          f'{med["baseline"]["median_overhead_ms"]:.1f} ms')
    b = med['baseline']
    print(f'whole run (reference atoms to last result, ML waits included): utilization interleaved '
          f'{i["utilization_whole_run"]:.3f}, baseline {b["utilization_whole_run"]:.3f} (ratio '
          f'{i["utilization_whole_run"] / b["utilization_whole_run"]:.2f}); '
          f'wall time interleaved {i["wall_time_s"]:.1f} s, '
          f'baseline {b["wall_time_s"]:.1f} s (baseline / interleaved {b["wall_time_s"] / i["wall_time_s"]:.2f})')
    print('note: "rounds" = generator rounds (screening records); a baseline with one round '
          '(batch size >= search size) never waits for ML inside the steered phase, so its steered-phase '
          'utilization is not a fair baseline')
    summary = {'machine': machine, 'method': common.METHOD, 'initial_count': initial, 'search_size': search,
               'objective': args.objective, 'seeds': seeds, 'app_args': app_args, 'quick': args.quick,
               'runs': runs, 'medians': med, 'utilization_ratio': ratio, 'elapsed': time.perf_counter() - start}
    name = 'utilization_quick' if args.quick else 'utilization'
    if args.results_dir == common.RESULTS_DIR:
        path = common.write_results(name, summary)
    else:
        from moldesign.store import dump_json
        args.results_dir.mkdir(parents=True, exist_ok=True)
        path = args.results_dir / f'{name}.json'
        dump_json(summary, path)
    print(f'Results: {path}')
    print(f'utilization ratio (interleaved / baseline): {ratio:.2f} (target >= 1.3)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
