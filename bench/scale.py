"""The thinker at scale: many simulated QC slots kept busy by the real thinker, queues, task server and ML tasks.

Only the QC computation is replaced. The QC executor ``qc`` is a Parsl ``ThreadPoolExecutor`` with N threads
whose tasks have the application's names (``compute_atomization_energy``, ``compute_reference_energy``,
``compute_atomization_energies``): each sleeps for a duration drawn from a log-normal distribution of mean T and
returns a real ``AtomizationRecord`` from a cheap oracle (the group-contribution model fitted on the QM9 GFN2-xTB
values of ``bench/common.py``, plus a fixed noise per molecule; 5 % of the molecules fail), see
``bench/simulated_qc.py``. Everything else is the application's own, assembled by
``Campaign.create(RunParams(...), out_dir, SessionOptions(...), initial_smiles=..., parsl_config=...,
methods=...)``: the thinker (consumer, QC submitter, generator), Colmena's pipe queues, the Parsl task server
process, the ML tasks (screening ``rank_candidates`` and MolDQN ``generate_molecules``) on a real HTEX ``ml``
executor, the records synced to disk, the re-ranking of the candidate pool.

Per cell (N slots, mean task time T), in the steady state (from the first steered task's start + 2 T to the last
steered task's submission; the budget is N / T results per second for the planned duration plus a start-up allowance
(QC does not wait for the ML workers' first screening), and the cell is stopped, as by Ctrl-C, once the planned
steady state after the first screening has passed):

- QC slot utilization (busy slot time / N x window, from the records' compute timestamps);
- results handled per second;
- latency from a result to the submission that refills its slot: slot k+S's task ``created`` minus the k-th
  result's ``result_received`` (S = slots + prefetched tasks; slots are released first-in first-out), p50 and
  p99; and the same from ``result_sent`` (task server), which adds the wait in the result pipe;
- re-rank (screening) time against the pool size (screening records: ``time.running``, ``timings``, and the
  round trip thinker -> ML worker -> thinker);
- CPU share of the thinker process (and of its agent threads), of the task server process (it runs the
  simulated QC threads: the oracle costs ~1 ms per molecule there) and of the ML workers; the machine's load.

    python bench/scale.py                        # grid N = 64, 256, 1024 x T = 1, 10 s, ~3 min of steady state each
    python bench/scale.py --quick                # one small cell (N = 64, T = 1 s), about a minute
    python bench/scale.py --cells 1024x10 256x1 --duration 240 --app rerank_every=16

Targets: utilization >= 0.95 at N = 1024, T = 10 s and at N = 256, T = 1 s; p99 result-to-submission latency
<= 50 ms. Writes ``bench/results/scale.json`` (``scale_quick.json``). The LAST line is the utilization at
N = 1024, T = 10 s (or of the last cell run if that cell is not in the grid).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets OMP_NUM_THREADS before tblite loads)
common.use_this_checkout()

import numpy as np  # noqa: E402

logger = logging.getLogger('bench.scale')

GRID = ((64, 1.), (64, 10.), (256, 1.), (256, 10.), (1024, 1.), (1024, 10.))
"""(QC slots, mean QC task seconds) of the full grid"""
QUICK = ((64, 1.),)
WARM_UP = 120.
"""Seconds of QC allowed in the budget before the first screening returns (the ML workers' start: TensorFlow and
RDKit imports, 10-60 s on 2 cores); the cell stops its planned steady state after that screening, so a fast start
leaves this share of the budget unspent"""
TARGET_UTILIZATION = 0.95
TARGET_P99_MS = 50.
AGENTS = {'consumer': 'consumer', 'submit_qc': 'submit_qc', '_task_submitter_agent': 'submit_qc',
          'syncer': 'syncer', 'steer': 'steer'}
"""The thinker's agent threads, recognised by a function on their stack: function name -> agent"""
RESULT_PATH = ('consumer', 'submit_qc', 'syncer')
"""The agents that handle each QC result (record, slot, submission, sync); ``steer`` handles ML results"""


# ---------------------------------------------------------------------------------------------- configuration
def make_parsl_config(run_root: Path, slots: int, ml_workers: int):
    """The QC executor as N threads; the ML executor exactly as ``config/local.py`` makes it"""
    import importlib.util
    import moldesign
    from parsl.config import Config
    from parsl.executors import ThreadPoolExecutor
    path = Path(moldesign.__file__).resolve().parents[1] / 'config' / 'local.py'  # The checkout being measured
    spec = importlib.util.spec_from_file_location('bench_local_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    local = module.make_config(run_root, 1, ml_workers)
    ml = next(e for e in local.executors if e.label == 'ml')
    return Config(executors=[ThreadPoolExecutor(label='qc', max_threads=slots, thread_name_prefix='simqc'), ml],
                  run_dir=str(run_root / 'parsl'), retries=1, strategy='none')


# ---------------------------------------------------------------------------------------------- CPU sampling
class CpuSampler(threading.Thread):
    """Samples the CPU time of this process (per agent thread), of the task server and of its descendants

    Args:
        period: Seconds between samples
    """

    def __init__(self, period: float = 1.):
        super().__init__(daemon=True, name='cpu-sampler')
        self.period = period
        self.samples: List[Dict[str, float]] = []
        self._agents: Dict[int, str] = {}
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def run(self) -> None:
        import psutil
        me = psutil.Process()
        children: List[Tuple[Any, List[Any]]] = []
        n = 0
        while not self._halt.wait(self.period):
            try:
                if n % 10 == 0:  # Listing processes scans /proc: only every 10 samples
                    children = [(c, c.children(recursive=True)) for c in me.children()]
                n += 1
                self.samples.append(self._sample(me, children))
            except Exception as exc:  # A process ended between listing and reading it
                logger.debug(f'CPU sample skipped: {exc}')

    def _agent_of_threads(self) -> Dict[int, str]:
        """Native thread id -> agent name, from the functions on each thread's stack (a thread keeps its agent)"""
        frames = sys._current_frames()
        found = self._agents
        for thread in threading.enumerate():
            if thread.native_id in found:
                continue
            frame = frames.get(thread.ident)
            while frame is not None:
                if frame.f_code.co_name in AGENTS:
                    found[thread.native_id] = AGENTS[frame.f_code.co_name]
                    break
                frame = frame.f_back
        return found

    def _sample(self, me, children) -> Dict[str, float]:
        import psutil
        times = me.cpu_times()
        sample = {'t': time.time(), 'thinker': times.user + times.system, 'load': os.getloadavg()[0]}
        agents = self._agent_of_threads()
        for thread in me.threads():
            name = agents.get(thread.id)
            if name:
                sample[f'thread:{name}'] = sample.get(f'thread:{name}', 0.) + thread.user_time + thread.system_time
        server, ml = 0., 0.
        for child, descendants in children:  # The task server (the simulated QC runs in it); Parsl's processes
            for proc, is_server in [(child, True)] + [(d, False) for d in descendants]:
                try:
                    t = proc.cpu_times()
                except psutil.Error:
                    continue
                if is_server:
                    server += t.user + t.system
                else:
                    ml += t.user + t.system
        sample['task_server'], sample['ml'] = server, ml
        return sample


def cpu_shares(samples: Sequence[Dict[str, float]], start: float, end: float) -> Dict[str, float]:
    """CPU seconds per wall second of each sampled series within [start, end] (1.0 = one core)"""
    inside = [s for s in samples if start <= s['t'] <= end]
    if len(inside) < 2:
        return {}
    first, last = inside[0], inside[-1]
    wall = last['t'] - first['t']
    keys = [k for k in last if k not in ('t', 'load')]
    out = {k: (last[k] - first.get(k, 0.)) / wall for k in keys}
    out['load'] = float(np.mean([s['load'] for s in inside]))
    return out


# ---------------------------------------------------------------------------------------------- instrumentation
class Timings:
    """Durations of the thinker's steps, from wrappers put around the methods of one thinker (no change to its code)

    ``consumer``: handling a group of QC results (records written and synced, dictionary, slots released);
    ``sync``: the disk sync of a group; ``submit``: one QC submission; ``ml_send``: sending a screening or MolDQN
    task; ``ml_handle``: taking an ML result (the pool's new order included); ``apply_ranking``: that new order.
    """

    def __init__(self):
        self.events: Dict[str, List[Tuple[float, float, int]]] = {}  # name -> (start, seconds, size)
        self.dry: List[float] = []  # When the QC submitter found the steered queue empty (unix seconds)
        self._lock = threading.Lock()

    def wrap(self, name: str, func, size=lambda *a, **k: 1):
        """A wrapper recording each call's start, duration and size"""
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                with self._lock:
                    self.events.setdefault(name, []).append((time.time(), elapsed, size(*args, **kwargs)))
        return timed

    def watch_gc(self) -> None:
        """Record the pauses of Python's garbage collector in this process (``gc0``, ``gc1``, ``gc2``)"""
        import gc
        started = {}

        def callback(phase: str, info: Dict[str, int]) -> None:
            if phase == 'start':
                started['t'] = time.perf_counter()
            elif 't' in started:
                elapsed = time.perf_counter() - started.pop('t')
                with self._lock:
                    self.events.setdefault(f'gc{info["generation"]}', []).append(
                        (time.time(), elapsed, info.get('collected', 0)))
        gc.callbacks.append(callback)
        self._gc_callback = callback

    def unwatch_gc(self) -> None:
        """Stop recording the garbage collector's pauses"""
        import gc
        if getattr(self, '_gc_callback', None) in gc.callbacks:
            gc.callbacks.remove(self._gc_callback)

    def instrument(self, thinker) -> None:
        """Wrap the steps of a thinker (before it starts)"""
        thinker._process_results = self.wrap('consumer', thinker._process_results, lambda results: len(results))
        thinker.store.sync = self.wrap('sync', thinker.store.sync)
        thinker._submit = self.wrap('submit', thinker._submit, lambda candidates: len(candidates))
        thinker._handle = self.wrap('ml_handle', thinker._handle)
        thinker.pool.apply_ranking = self.wrap('apply_ranking', thinker.pool.apply_ranking,
                                               lambda ranking, best=None, **_: len(ranking.smiles))
        pop = thinker.pool.pop

        def pop_watching_for_dry(lane: str):
            candidate = pop(lane)
            if candidate is None and lane == 'steered':
                self.dry.append(time.time())  # The submitter found no candidate to submit
            return candidate
        thinker.pool.pop = pop_watching_for_dry
        send = thinker.queues.send_inputs

        def send_inputs(*args, **kwargs):
            if kwargs.get('topic') == 'ML':
                return self.wrap('ml_send', send)(*args, **kwargs)
            return send(*args, **kwargs)
        thinker.queues.send_inputs = send_inputs

    def summary(self, start: float, end: float) -> Dict[str, Dict[str, float]]:
        """Count, p50, p99, max (ms), mean size and busy share of each step within [start, end]"""
        out = {}
        for name, events in self.events.items():
            inside = [(d, n) for t, d, n in events if start <= t <= end]
            if not inside:
                continue
            durations = np.array([d for d, _ in inside]) * 1e3
            out[name] = {'n': len(inside), 'p50_ms': float(np.median(durations)),
                         'p99_ms': float(np.percentile(durations, 99)), 'max_ms': float(durations.max()),
                         'mean_size': float(np.mean([n for _, n in inside])),
                         'busy_share': float(durations.sum() / 1e3 / (end - start))}
        return out


def instrumented_campaign(timings: Timings):
    """The application's Campaign, with its thinker instrumented as it is assembled"""
    from moldesign.steer.campaign import Campaign

    class InstrumentedCampaign(Campaign):
        def _assemble(self, progress):
            server, queues = super()._assemble(progress)
            timings.instrument(self.thinker)
            return server, queues

    return InstrumentedCampaign


# ---------------------------------------------------------------------------------------------- candidates
class LibraryFeeder(threading.Thread):
    """Keeps the thinker's candidate pool stocked with QM9 molecules (source ``library``), so supply is not the limit

    The application's own sources (MolDQN, neighbourhoods of the best) make candidates on the ML workers at a
    rate bounded by their CPU (see ``docs/scaling.md``); to measure the thinker at hundreds of results per second
    on a 2-core machine, this adds QM9 molecules through the pool's own :meth:`add` whenever the pool (ranked and
    unranked candidates) falls below half of ``target``. They are screened and ranked like any other candidate.

    Args:
        campaign: The campaign (its thinker exists once it runs)
        library: Molecules to add, in order
        target: Pool size to top up to
    """

    def __init__(self, campaign, library: Sequence[str], target: int):
        super().__init__(daemon=True, name='library-feeder')
        self.campaign, self.library, self.target = campaign, list(library), target
        self.added = 0
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def run(self) -> None:
        while not self._halt.wait(0.5):
            thinker = self.campaign.thinker
            if thinker is None or self.added >= len(self.library):
                continue
            size = len(thinker.pool)
            if size < self.target // 2:
                chunk = self.library[self.added:self.added + self.target - size]
                self.added += len(chunk)
                thinker.pool.add(chunk, 'library')


class StopAfter(threading.Thread):
    """Asks the thinker to stop (as Ctrl-C does) ``seconds`` after the first screening reached the queue

    The budget is set from the nominal rate N / T; when the machine cannot deliver it, this keeps the cell to
    its planned steady state instead of running the whole budget at the lower rate.

    Args:
        campaign: The campaign (its thinker exists once it runs)
        seconds: Seconds after the first screening
    """

    def __init__(self, campaign, seconds: float):
        super().__init__(daemon=True, name='stop-after')
        self.campaign, self.seconds = campaign, seconds
        self.stopped_at: Optional[float] = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def run(self) -> None:
        while not self._halt.wait(0.5):
            thinker = self.campaign.thinker
            if thinker is not None and thinker.batches_done:
                break
        if not self._halt.wait(self.seconds) and self.campaign.thinker is not None:
            self.stopped_at = time.time()
            logger.info(f'Steady state of {self.seconds:.0f} s reached: stopping the campaign')
            self.campaign.thinker.request_stop()


# ---------------------------------------------------------------------------------------------- analysis
def _t(record: dict, name: str) -> Optional[float]:
    from moldesign.report.data import record_time
    return record_time(record, name)


def qc_tasks(records: Sequence[dict]) -> List[dict]:
    """One record per QC task that held a slot (molecule tasks; reference atoms do not hold slots)"""
    seen, tasks = set(), []
    for r in records:
        if r.get('phase') == 'reference' or r.get('task_id') in seen:
            continue
        seen.add(r.get('task_id'))
        tasks.append(r)
    return tasks


def refill_latencies(tasks: Sequence[dict], slots: int, start: float, end: float, stamp: str = 'result_received'
                     ) -> np.ndarray:
    """Seconds from a result to the submission of the task that took its slot

    Slots are released in the order results are handled and acquired in the order tasks are submitted, so the
    task submitted (S + k)-th takes the slot of the k-th result (S: slots, prefetch included).

    Args:
        tasks: QC task records
        slots: QC slots of the thinker (workers + prefetch)
        start: Only submissions from this time (unix seconds)
        end: ... to this time
        stamp: Timestamp of the result (``result_received``: the thinker has parsed it; ``result_sent``: the
            task server sent it)
    """
    first, later = refill_pairs(tasks, slots, start, end, stamp)
    return later - first


def refill_pairs(tasks: Sequence[dict], slots: int, start: float, end: float, stamp: str = 'result_received'
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """(time of the k-th result, time of the submission that took its slot), for submissions in [start, end]

    See :func:`refill_latencies`.
    """
    created = np.sort([c for r in tasks if (c := _t(r, 'created')) is not None])
    released = np.sort([c for r in tasks if (c := _t(r, stamp)) is not None])
    n = min(len(created) - slots, len(released))
    if n <= 0:
        return np.zeros(0), np.zeros(0)
    later, first = created[slots:slots + n], released[:n]
    keep = (later >= start) & (later <= end)
    return first[keep], later[keep]


def waited_for_candidates(first: np.ndarray, later: np.ndarray, dry: Sequence[float]) -> np.ndarray:
    """Which refills waited for candidates: the submitter found the queue empty between result and submission"""
    dry = np.sort(np.asarray(dry, dtype=float))
    if not len(dry) or not len(first):
        return np.zeros(len(first), dtype=bool)
    return np.searchsorted(dry, later, side='right') > np.searchsorted(dry, first, side='left')


def rerank_table(screening: Sequence[dict], bins: int = 4) -> List[Dict[str, float]]:
    """Screening cost against the number of candidates screened (pool size), in bins of pool size"""
    rows = []
    for r in screening:
        if not r.get('success'):
            continue
        created, received = _t(r, 'created'), _t(r, 'result_received')
        timings = r.get('timings') or {}
        rows.append({'pool': r.get('n_candidates') or 0, 'train': r.get('n_train') or 0,
                     'running': (r.get('time') or {}).get('running') or np.nan,
                     'round_trip': (received - created) if created and received else np.nan,
                     **{k: timings.get(k, np.nan) for k in ('fit', 'expand', 'predict')}})
    if not rows:
        return []
    rows.sort(key=lambda x: x['pool'])
    out = []
    for group in np.array_split(np.arange(len(rows)), min(bins, len(rows))):
        chunk = [rows[i] for i in group]
        out.append({'n': len(chunk), 'pool_min': chunk[0]['pool'], 'pool_max': chunk[-1]['pool'],
                    **{k: float(np.nanmedian([c[k] for c in chunk]))
                       for k in ('train', 'running', 'round_trip', 'fit', 'expand', 'predict')}})
    return out


def analyse(run_dir: Path, slots: int, workers: int, mean_time: float, samples: Sequence[dict],
            timings: Optional[Timings] = None, end: Optional[float] = None) -> Dict[str, Any]:
    """The figures of one cell (see the module docstring); ``end``: the cell was stopped then"""
    from moldesign.report.data import qc_utilization
    from moldesign.store import load_run
    run = load_run(run_dir)
    tasks = qc_tasks(run.simulation)
    steered = [r for r in tasks if r.get('phase') == 'steered']
    if not steered:
        return {'error': 'no steered task'}
    first_start = min(s for r in steered if (s := _t(r, 'compute_started')) is not None)
    screened = [t for r in run.screening if r.get('success') and r.get('n_queued')
                and (t := _t(r, 'result_received')) is not None]
    ranked = max(first_start, min(screened)) if screened else first_start  # The first screening is in the queue
    last_created = max(c for r in steered if (c := _t(r, 'created')) is not None)
    start, end = ranked + 2 * mean_time, min(last_created, end or last_created)
    if end - start < 5:
        start = ranked
    window = end - start
    received = [t for r in tasks if (t := _t(r, 'result_received')) is not None and start <= t <= end]
    lat = refill_latencies(tasks, slots, start, end)
    waited = waited_for_candidates(*refill_pairs(tasks, slots, start, end), timings.dry if timings else [])
    fed = lat[~waited]  # Refills that found a candidate queued: the thinker's own latency
    lat_sent = refill_latencies(tasks, slots, start, end, 'result_sent')
    shares = cpu_shares(samples, start, end)
    n_results = len(received)
    summary = run.summary or {}
    out = {
        'run_dir': str(run_dir), 'window_s': window, 'n_tasks': len(tasks), 'n_steered': len(steered),
        'utilization': qc_utilization(tasks, workers, phase=None, start=start, end=end),
        'utilization_whole_run': qc_utilization(run.simulation, workers, phase=None),
        'results_per_s': n_results / window if window > 0 else float('nan'),
        'latency_p50_ms': float(np.percentile(lat, 50) * 1e3) if len(lat) else None,
        'latency_p99_ms': float(np.percentile(lat, 99) * 1e3) if len(lat) else None,
        'latency_max_ms': float(lat.max() * 1e3) if len(lat) else None,
        'latency_fed_p50_ms': float(np.percentile(fed, 50) * 1e3) if len(fed) else None,
        'latency_fed_p99_ms': float(np.percentile(fed, 99) * 1e3) if len(fed) else None,
        'refills_waiting_for_candidates': int(waited.sum()), 'refills': int(len(lat)),
        'latency_sent_p50_ms': float(np.percentile(lat_sent, 50) * 1e3) if len(lat_sent) else None,
        'latency_sent_p99_ms': float(np.percentile(lat_sent, 99) * 1e3) if len(lat_sent) else None,
        'cpu': shares,
        'thinker_cpu_ms_per_result': shares.get('thinker', np.nan) * window / n_results * 1e3 if n_results else None,
        'task_server_cpu_ms_per_result': shares.get('task_server', np.nan) * window / n_results * 1e3
        if n_results else None,
        'result_path_cpu_ms_per_result': sum(shares.get(f'thread:{a}', 0.) for a in RESULT_PATH) * window
        / n_results * 1e3 if n_results else None,
        'n_screenings': len(run.screening), 'n_moldqn': len(run.rl),
        'steered_by_source': dict(Counter(r.get('source') for r in run.molecule_records
                                          if r.get('phase') == 'steered')),
        'queue_ran_dry': summary.get('queue_ran_dry'),
        'rerank': rerank_table(run.screening),
        'steps': timings.summary(start, end) if timings is not None else {},
        'wall_time_s': summary.get('wall_time'),
        'complete': summary.get('complete'),
    }
    return out


# ---------------------------------------------------------------------------------------------- one cell
def run_cell(work: Path, slots: int, mean_time: float, duration: float, oracle, prefetch: Optional[int],
             ml_workers: int, app: Dict[str, Any], seed: int, library: bool = True) -> Dict[str, Any]:
    """Run one campaign with ``slots`` simulated QC slots and analyse it

    Args:
        work: Directory of the run directories
        slots: QC slots (threads of the simulated QC executor)
        mean_time: Mean duration of a QC task (s)
        duration: Seconds of steady state wanted (sets the budget)
        oracle: Values of the simulated QC
        prefetch: QC tasks waiting beyond one per slot (None: one per slot, as run.py)
        ml_workers: ML workers
        app: More RunParams fields
        seed: Seed of the campaign and of the simulated durations
        library: Keep the candidate pool stocked with QM9 molecules (:class:`LibraryFeeder`)
    Returns:
        The cell's figures
    """
    from moldesign.qm9 import sample_molecules
    from moldesign.steer.campaign import ml_methods
    from moldesign.steer.params import RunParams, SessionOptions
    from simulated_qc import SimulatedQC

    rate = slots / mean_time
    search_size = int(rate * (duration + 3 * mean_time + WARM_UP))
    table = sample_molecules(min(130000, slots + search_size + 20000), seed=seed)['smiles'].tolist()
    initial = list(dict.fromkeys(table[:slots + 16]))[:slots]
    start = time.perf_counter()
    oracle.precompute(table if library else initial, common.bench_cache_dir() / f'oracle-{oracle.key()}.pkl')
    logger.info(f'Oracle values of {len(table)} QM9 molecules ready in {time.perf_counter() - start:.0f} s')
    prefetch = slots if prefetch is None else prefetch
    params = RunParams(search_size=search_size, initial_count=len(initial), qc_workers=slots, qc_prefetch=prefetch,
                       ml_workers=ml_workers, seed=seed, **app)
    qc = SimulatedQC(oracle, mean_time, reference_time=min(0.5, mean_time), seed=seed)
    out_dir = work / f'N{slots}-T{mean_time:g}'
    out_dir.mkdir(parents=True, exist_ok=True)
    config = make_parsl_config(out_dir, slots, ml_workers)
    timings = Timings()
    options = SessionOptions(quiet=True, report=False, shutdown_timeout=30)
    campaign = instrumented_campaign(timings).create(params, out_dir, options, initial_smiles=initial,
                                                     parsl_config=config,
                                                     methods={'qc': qc.methods(), 'ml': ml_methods()})
    sampler = CpuSampler()
    feeder = LibraryFeeder(campaign, table[slots + 16:], target=min(19000, max(4 * slots, int(rate * 120)))) \
        if library else None
    stopper = StopAfter(campaign, duration + 4 * mean_time)
    sampler.start()
    timings.watch_gc()
    stopper.start()
    if feeder is not None:
        feeder.start()
    started = time.time()
    try:
        with (out_dir / 'console.log').open('w') as console, contextlib.redirect_stdout(console):
            code = campaign.run()  # Its closing summary (best molecules) goes to console.log
    finally:
        sampler.stop()
        stopper.stop()
        timings.unwatch_gc()
        if feeder is not None:
            feeder.stop()
    figures = analyse(campaign.run_dir, slots + prefetch, slots, mean_time, sampler.samples, timings,
                      end=stopper.stopped_at)
    figures.update({'slots': slots, 'mean_time_s': mean_time, 'prefetch': prefetch, 'search_size': search_size,
                    'stopped_at': stopper.stopped_at, 'first_steered_s': _first_steered(campaign.run_dir, started),
                    'library_added': feeder.added if feeder is not None else 0,
                    'exit_code': code, 'elapsed_s': time.time() - started, 'app': app,
                    'stopped_by_time': stopper.stopped_at is not None})
    return figures


def _first_steered(run_dir: Path, started: float) -> Optional[float]:
    """Seconds from the start of a cell to its first steered QC task"""
    from moldesign.store import load_run
    times = [t for r in load_run(run_dir).simulation if r.get('phase') == 'steered'
             and (t := _t(r, 'compute_started')) is not None]
    return min(times) - started if times else None


REANALYSED = ('window_s', 'utilization', 'utilization_whole_run', 'results_per_s', 'latency_p50_ms', 'latency_p99_ms',
              'latency_max_ms', 'latency_sent_p50_ms', 'latency_sent_p99_ms')
"""Figures that :func:`reanalyse` recomputes from the records (the CPU shares and step timings are not kept)"""


def reanalyse(path: Path) -> List[Dict[str, Any]]:
    """Recompute the record-based figures of the cells of a results file whose run directories were kept"""
    cells = json.loads(Path(path).read_text())['cells']
    for cell in cells:
        run_dir = Path(cell['run_dir'])
        if not run_dir.is_dir():
            continue
        figures = analyse(run_dir, cell['slots'] + cell['prefetch'], cell['slots'], cell['mean_time_s'], [],
                          end=cell.get('stopped_at'))
        cell.update({k: figures[k] for k in REANALYSED if k in figures}, reanalysed=True)
    return cells


def _fmt(value: Optional[float], spec: str) -> str:
    return format(value, spec) if value is not None and np.isfinite(value) else 'n/a'


def print_cell(f: Dict[str, Any]) -> None:
    """Print one cell's figures"""
    if 'error' in f:
        print(f'N={f["slots"]} T={f["mean_time_s"]:g}s: no figures ({f["error"]}; exit code {f.get("exit_code")})',
              flush=True)
        return
    cpu = f.get('cpu') or {}
    print(f'N={f["slots"]} T={f["mean_time_s"]:g}s: utilization {_fmt(f["utilization"], ".3f")} '
          f'(whole run {_fmt(f["utilization_whole_run"], ".3f")}), {_fmt(f["results_per_s"], ".1f")} results/s over '
          f'{f["window_s"]:.0f} s; result->submission p50 {_fmt(f["latency_p50_ms"], ".1f")} ms, p99 '
          f'{_fmt(f["latency_p99_ms"], ".1f")} ms (from result_sent: p50 {_fmt(f["latency_sent_p50_ms"], ".1f")}, '
          f'p99 {_fmt(f["latency_sent_p99_ms"], ".1f")}); queue ran dry {f.get("queue_ran_dry")}', flush=True)
    print(f'  refills that found a candidate queued: p50 {_fmt(f.get("latency_fed_p50_ms"), ".1f")} ms, p99 '
          f'{_fmt(f.get("latency_fed_p99_ms"), ".1f")} ms ({f.get("refills_waiting_for_candidates")} of '
          f'{f.get("refills")} refills waited for candidates: the pool was not re-ranked yet)', flush=True)
    threads = ', '.join(f'{k.split(":")[1]} {v:.2f}' for k, v in cpu.items() if k.startswith('thread:'))
    print(f'  CPU (cores): thinker {_fmt(cpu.get("thinker"), ".2f")} ({threads}), task server + simulated QC '
          f'{_fmt(cpu.get("task_server"), ".2f")}, ML workers {_fmt(cpu.get("ml"), ".2f")}; thinker '
          f'{_fmt(f.get("thinker_cpu_ms_per_result"), ".2f")} ms CPU per result (consumer + submitter + syncer '
          f'{_fmt(f.get("result_path_cpu_ms_per_result"), ".2f")} ms); load average '
          f'{_fmt(cpu.get("load"), ".1f")}; {f["n_screenings"]} screenings, {f["n_moldqn"]} MolDQN calls; '
          f'steered molecules by source '
          f'{f.get("steered_by_source")} (library molecules added {f.get("library_added")})', flush=True)
    steps = f.get('steps') or {}
    if steps:
        print('  thinker steps (ms): ' + '; '.join(
            f'{k} p50 {v["p50_ms"]:.2f} p99 {v["p99_ms"]:.1f} max {v["max_ms"]:.0f} (x{v["n"]}, size '
            f'{v["mean_size"]:.0f}, {100 * v["busy_share"]:.0f} % of the time)' for k, v in steps.items()), flush=True)
    for row in f.get('rerank') or []:
        print(f'  re-rank: pool {row["pool_min"]}-{row["pool_max"]} ({row["n"]} screenings, training set '
              f'{row["train"]:.0f}): task {row["running"]:.2f} s (fit {row["fit"]:.2f}, expand {row["expand"]:.2f}, '
              f'predict {row["predict"]:.2f}), round trip {row["round_trip"]:.2f} s', flush=True)


def print_table(cells: Sequence[Dict[str, Any]]) -> None:
    print()
    print(f'{"N":>5s} {"T_s":>4s} {"util":>6s} {"whole":>6s} {"res/s":>7s} {"p50_ms":>7s} {"p99_ms":>7s} '
          f'{"fed_p99":>7s} {"thinker":>7s} {"ms/res":>6s} {"server":>6s} {"ml":>5s} {"load":>5s} {"screens":>7s} '
          f'{"dry":>4s}')
    for f in cells:
        if 'error' in f:
            print(f'{f["slots"]:>5d} {f["mean_time_s"]:>4g} {f["error"]}')
            continue
        cpu = f.get('cpu') or {}
        print(f'{f["slots"]:>5d} {f["mean_time_s"]:>4g} {_fmt(f["utilization"], ">6.3f")} '
              f'{_fmt(f["utilization_whole_run"], ">6.3f")} {_fmt(f["results_per_s"], ">7.1f")} '
              f'{_fmt(f["latency_p50_ms"], ">7.1f")} {_fmt(f["latency_p99_ms"], ">7.1f")} '
              f'{_fmt(f.get("latency_fed_p99_ms"), ">7.1f")} '
              f'{_fmt(cpu.get("thinker"), ">7.2f")} {_fmt(f.get("thinker_cpu_ms_per_result"), ">6.2f")} '
              f'{_fmt(cpu.get("task_server"), ">6.2f")} {_fmt(cpu.get("ml"), ">5.2f")} '
              f'{_fmt(cpu.get("load"), ">5.1f")} '
              f'{f["n_screenings"]:>7d} {str(f.get("queue_ran_dry")):>4s}')


def _parse_cell(text: str) -> Tuple[int, float]:
    n, t = text.lower().split('x')
    return int(n), float(t)


def _parse_app(items: Sequence[str]) -> Dict[str, Any]:
    out = {}
    for item in items:
        key, value = item.split('=', 1)
        out[key] = json.loads(value) if value[:1] in '[{"0123456789-tf' and value not in ('rerank', 'recency') \
            else value
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='One small cell (N=64, T=1 s, 30 s of steady state)')
    parser.add_argument('--cells', nargs='+', type=_parse_cell, default=None,
                        help='Cells as NxT, e.g. 1024x10 256x1 (default: the grid)')
    parser.add_argument('--duration', type=float, default=None,
                        help='Seconds of steady state per cell (default 180; quick 30); sets the budget')
    parser.add_argument('--prefetch', type=int, default=None,
                        help='QC tasks waiting beyond one per slot (default: one per slot, as run.py)')
    parser.add_argument('--ml-workers', type=int, default=2, help='ML workers (HTEX ml), as run.py (2)')
    parser.add_argument('--app', nargs='*', default=[], metavar='FIELD=VALUE',
                        help='RunParams fields, e.g. rerank_every=16 rerank_interval=2 qc_bundle=4')
    parser.add_argument('--no-library', action='store_true',
                        help="Candidates from the application's sources only (MolDQN, neighbourhoods): no QM9 feeder")
    parser.add_argument('--redis', action='store_true',
                        help='Colmena queues through a redis-server started here (run.py --redishost) instead of pipes')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--keep-runs', type=Path, default=None, help='Keep the run directories here')
    parser.add_argument('--results', type=Path, default=None, help='JSON output (default bench/results/scale.json)')
    parser.add_argument('--reanalyse', type=Path, default=None, metavar='RESULTS_JSON',
                        help='Recompute the record-based figures of a results file whose runs were kept, and exit')
    args = parser.parse_args(argv)
    if args.reanalyse is not None:
        cells = reanalyse(args.reanalyse)
        data = json.loads(args.reanalyse.read_text())
        data['cells'] = cells
        from moldesign.store import dump_json
        dump_json(data, args.results or args.reanalyse)
        print_table(cells)
        print_last_line(cells)
        return 0

    cells = args.cells or (QUICK if args.quick else GRID)
    # The simulated failures (5 % of the tasks, tens per second) are in the records; not on the console
    logging.getLogger('moldesign.steer.thinker').addFilter(lambda r: 'simulated QC failure' not in r.getMessage())
    duration = args.duration or (30. if args.quick else 180.)
    app = _parse_app(args.app)
    machine = common.machine_info()
    print(f'machine: {machine["nproc"]} cores, {machine["cpu_model"]}, load average {machine["loadavg_at_start"]} '
          f'(shared machine: timings are noisy)')
    print(f'cells {", ".join(f"N={n} T={t:g}s" for n, t in cells)}; ~{duration:.0f} s of steady state each; '
          f'prefetch {"one per slot" if args.prefetch is None else args.prefetch}; ML workers {args.ml_workers}; '
          f'app {app or "defaults"}', flush=True)

    from simulated_qc import load_oracle

    from moldesign.steer.redis_local import local_redis
    oracle = load_oracle()
    work = common.tmp_work_dir('bench-scale-', args.keep_runs)
    results: List[Dict[str, Any]] = []
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.redis:
            app.update({'redishost': '127.0.0.1', 'redisport': stack.enter_context(local_redis(work))})
        stack.callback(common.remove_tmp, work, args.keep_runs)
        for slots, mean_time in cells:
            figures = run_cell(work, slots, mean_time, duration, oracle, args.prefetch, args.ml_workers, app,
                               args.seed, library=not args.no_library)
            results.append(figures)
            print_cell(figures)
    print_table(results)
    summary = {'machine': machine, 'duration': duration, 'prefetch': args.prefetch, 'ml_workers': args.ml_workers,
               'app': app, 'quick': args.quick, 'cells': results, 'elapsed': time.perf_counter() - start,
               'loadavg_at_end': ' '.join(f'{x:.2f}' for x in os.getloadavg())}
    if args.results is not None:
        from moldesign.store import dump_json
        dump_json(summary, args.results)
        path = args.results
    else:
        path = common.write_results('scale_quick' if args.quick else 'scale', summary)
    print(f'Results: {path}')
    print_last_line(results)
    return 0


def print_last_line(cells: Sequence[Dict[str, Any]]) -> None:
    """The utilization at N = 1024, T = 10 s (or of the last cell)"""
    last = next((c for c in cells if c['slots'] == 1024 and c['mean_time_s'] == 10.), cells[-1])
    print(f'utilization at N={last["slots"]}, T={last["mean_time_s"]:g} s: {_fmt(last.get("utilization"), ".3f")} '
          f'(target >= {TARGET_UTILIZATION}); p99 result->submission {_fmt(last.get("latency_p99_ms"), ".1f")} ms '
          f'(target <= {TARGET_P99_MS:.0f})')


if __name__ == '__main__':
    sys.exit(main())
