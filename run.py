"""Search QM9 chemical space for the molecule of minimal atomization energy.

Interleaves quantum chemistry (QC, Parsl executor ``qc``) with MolDQN reinforcement learning on a
group-contribution model (Parsl executor ``ml``), steered by one Colmena thinker.

    python run.py                         # small campaign on this machine (config/local.py, GFN2-xTB)
    python run.py --qc pyscf/hf/sto-3g    # another QC method
    python run.py --restart runs/<name>   # continue an interrupted run

Each run writes a directory ``runs/<UTC time>-<hash>/`` with its parameters, every QC result and a report.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import multiprocessing
import os
import pickle
import signal
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

_HERE = Path(__file__).resolve().parent
logger = logging.getLogger('moldesign.run')

OBJECTIVES = ('atomization_energy', 'atomization_energy_per_atom')
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130
DEFAULT_SEARCH_SIZE = 32
_HARMLESS = ('Serialized object exceeds buffer threshold',)  # Parsl: the MolDQN agent is a few MB; kept in runtime.log


class UsageError(ValueError):
    """Invalid command-line input: reported in one line, naming the option"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text}')
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be zero or a positive integer, got {text}')
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f'must be zero or positive, got {text}')
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0] + ' Steers QC with MolDQN reinforcement learning (Colmena + Parsl).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    search = parser.add_argument_group('search')
    search.add_argument('--objective', choices=OBJECTIVES, default='atomization_energy',
                        help='Quantity to minimise: total atomization energy, or atomization energy per atom (H included)')
    search.add_argument('--initial-count', type=_non_negative_int, default=16,
                        help='Number of random QM9 molecules computed with QC before steering starts')
    search.add_argument('--initial-smiles', type=Path, default=None, metavar='FILE',
                        help='File with one SMILES per line (anything after white space is ignored; lines starting '
                             'with # are comments) to use as the initial population instead of random QM9 molecules')
    search.add_argument('--skip-invalid', action='store_true',
                        help='Skip invalid lines of --initial-smiles (default: report them all and stop before any QC)')
    search.add_argument('--search-size', type=_non_negative_int, default=None,
                        help='Number of new (steered) molecules to evaluate with QC after the initial population '
                             f'(default: {DEFAULT_SEARCH_SIZE}; with --restart, the run\'s own unless larger)')
    search.add_argument('--parallel-guesses', type=_positive_int, default=None,
                        help='Number of QC workers kept busy (default: the number of QC workers of the config, '
                             'one per core but one for --config local)')
    search.add_argument('--qc-prefetch', type=_non_negative_int, default=None,
                        help='QC tasks submitted beyond one per worker, so a worker starts its next molecule the '
                             'moment it finishes instead of idling for the round trip through Parsl and the thinker '
                             '(default: parallel guesses, one waiting per worker; 0: submit only when a worker is free)')
    search.add_argument('--batch-size', type=_positive_int, default=None,
                        help='Molecules the generator puts in the priority queue per batch '
                             '(default: max(64, 8 x parallel guesses): enough to keep QC busy while the next batch is generated; older batches are the fallback)')
    search.add_argument('--rl-episodes', type=_positive_int, default=16,
                        help='MolDQN episodes per generator call')
    search.add_argument('--rl-steps', type=_positive_int, default=None,
                        help='Steps per MolDQN episode (default: the agent\'s, enough to build 9 heavy atoms)')
    search.add_argument('--seed', type=int, default=1, help='Random seed (QM9 sample, RL)')

    compute = parser.add_argument_group('computing')
    compute.add_argument('--qc', default='xtb',
                         help='QC specification: "xtb" (GFN2-xTB with tblite), "pyscf/<method>/<basis>", '
                              '"psi4/<method>/<basis>", "nwchem/<method>/<basis>"; append "//xtb" for a single '
                              'point on the GFN2-xTB geometry, e.g. "pyscf/b3lyp/6-31g(2df,p)//xtb"')
    compute.add_argument('--qc-keywords', default=None, metavar='JSON',
                         help='Program keywords of the QC specification as a JSON object, e.g. '
                              '\'{"nwchem_ranks": 4, "timeout": 3600}\' (NWChem MPI ranks), \'{"memory": "8 GB"}\' (psi4), '
                              '\'{"fmax": 0.02}\' (xtb)')
    compute.add_argument('--config', default='local',
                         help='Parsl configuration: name of a module in config/ (local, polaris, slurm, ...) '
                              'or a path to a .py file providing make_config(run_dir, qc_workers, ml_workers)')
    compute.add_argument('--qc-timeout', type=_non_negative_float, default=0,
                         help='Wall-time limit of one QC task in seconds (0: none); a task over it is recorded as failed')
    compute.add_argument('--qc-retries', type=_non_negative_int, default=0,
                         help='Times to retry a failed QC task (worker deaths are retried once by Parsl regardless)')
    compute.add_argument('--batch-baseline', action='store_true',
                         help='Benchmark baseline: do not interleave; the generator waits until its previous '
                              'selection is evaluated, so QC idles while ML runs')
    compute.add_argument('--shutdown-timeout', type=_non_negative_float, default=60,
                         help='Seconds to wait for in-flight QC tasks after Ctrl-C or SIGTERM')

    redis = parser.add_argument_group('thinker and workers on different hosts')
    redis.add_argument('--redishost', default=None,
                       help='Redis server for the queues between thinker and task server (default: local pipes)')
    redis.add_argument('--redisport', type=int, default=6379, help='Redis port')
    redis.add_argument('--redis-password', default=None,
                       help='Redis password (default: $MOLDESIGN_REDIS_PASSWORD if set)')

    output = parser.add_argument_group('output')
    output.add_argument('--out-dir', type=Path, default=Path('runs'), help='Directory in which the run directory is created')
    output.add_argument('--restart', type=Path, default=None, metavar='RUN_DIR',
                        help='Continue an interrupted run in RUN_DIR (its parameters are reused; --search-size may grow it)')
    output.add_argument('--quiet', action='store_true', help='No live progress display')
    output.add_argument('--no-report', action='store_true', help='Do not write report.md and figures at the end')
    return parser


# ---------------------------------------------------------------------- helpers
def load_config_module(name: str):
    """Import ``config/<name>.py`` (or a path to a .py file)"""
    path = Path(name)
    if path.suffix != '.py':
        path = _HERE / 'config' / f'{name}.py'
    if not path.is_file():
        known = sorted(p.stem for p in (_HERE / 'config').glob('*.py') if not p.stem.startswith('_'))
        raise UsageError(f'--config: no configuration {name!r} (known: {", ".join(known)})')
    spec = importlib.util.spec_from_file_location(f'moldesign_config_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, 'make_config'):
        raise UsageError(f'--config: {path} has no make_config(run_dir, qc_workers, ml_workers) function')
    return module


def read_initial_smiles(path: Path, skip_invalid: bool) -> List[str]:
    """Read and validate an initial population file

    Returns:
        Canonical SMILES (duplicates removed, order kept)
    Raises:
        UsageError: listing every invalid line with its number, unless ``skip_invalid``
    """
    from moldesign.chem import InvalidMoleculeError, validate_smiles
    if not path.is_file():
        raise UsageError(f'--initial-smiles: {path} is not a file')
    good, bad = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith('#'):  # '#' inside a SMILES is a triple bond: comments start a line
            continue
        smiles = text.split()[0]  # A name or comment may follow the SMILES after white space
        try:
            good.append(validate_smiles(smiles))
        except InvalidMoleculeError as exc:
            bad.append(f'line {lineno}: {exc}')
    if bad:
        message = f'--initial-smiles: {len(bad)} invalid line(s) in {path}: ' + '; '.join(bad)
        if not skip_invalid:
            raise UsageError(message + ' (fix them, or pass --skip-invalid to skip them)')
        logger.warning(message + ' -- skipped')
    if not good:
        raise UsageError(f'--initial-smiles: no valid molecule in {path}')
    return list(dict.fromkeys(good))


def setup_logging(run_dir: Path, quiet_console: bool) -> None:
    """Everything to ``runtime.log``; this application's messages (and warnings of others) to the console"""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter('%(asctime)s - %(name)s - %(levelname)s - %(message)s')
    file_handler = logging.FileHandler(run_dir / 'runtime.log')
    file_handler.setFormatter(fmt)
    root.addHandler(file_handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s', '%H:%M:%S'))
    console.addFilter(lambda r: (r.levelno >= logging.WARNING and not r.getMessage().startswith(_HARMLESS))
                      or (r.name.startswith('moldesign') and not quiet_console))
    root.addHandler(console)
    for noisy in ('parsl', 'colmena', 'proxystore'):
        logging.getLogger(noisy).setLevel(logging.INFO)


def load_previous_run(run_dir: Path) -> Tuple[dict, List[dict], Dict[str, float], int]:
    """What an interrupted run had done: parameters, molecule records, reference energies, next batch"""
    from moldesign.store import RUN_PARAMS, SIMULATION_RECORDS, load_json, read_jsonl
    params = load_json(run_dir / RUN_PARAMS) if run_dir.is_dir() else None
    if params is None:
        raise UsageError(f'--restart: {run_dir} is not a run directory (no {RUN_PARAMS})')
    molecules, references = [], dict(load_json(run_dir / 'reference_energies.json') or {})
    for record in read_jsonl(run_dir / SIMULATION_RECORDS):
        if record.get('method') == 'compute_atomization_energy' and record.get('smiles'):
            molecules.append(record)
        elif record.get('method') == 'compute_reference_energy' and record.get('success'):
            references.setdefault(record['element'], record['value']['energy'])
    batches = [r['batch'] for r in molecules if r.get('batch') is not None and r['batch'] >= 0]
    from moldesign.store import SCREENING_RECORDS
    batches += [r['batch'] for r in read_jsonl(run_dir / SCREENING_RECORDS) if r.get('batch') is not None]
    return params, molecules, references, (max(batches) + 1 if batches else 0)


# ---------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as exc:
        parser.exit(2, f'{parser.prog}: error: {exc}\n')


def run(args: argparse.Namespace) -> int:
    from moldesign.simulate.base import get_spec
    from moldesign.store import RunStore, get_host_info, make_run_name, dump_json

    # Validate what can be validated before creating anything
    config_module = load_config_module(args.config)
    try:
        qc_keywords = json.loads(args.qc_keywords) if args.qc_keywords else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f'--qc-keywords: not valid JSON ({exc})') from None
    if not isinstance(qc_keywords, dict):
        raise UsageError('--qc-keywords: must be a JSON object, e.g. \'{"timeout": 600}\'')
    try:
        qc_spec = get_spec(args.qc, **qc_keywords)
    except ValueError as exc:
        raise UsageError(f'--qc: {exc}') from None
    redis_password = args.redis_password or os.environ.get('MOLDESIGN_REDIS_PASSWORD')

    previous_records: List[dict] = []
    reference_energies: Dict[str, float] = {}
    start_batch = 0
    if args.restart is not None:
        run_dir = args.restart
        params, previous_records, reference_energies, start_batch = load_previous_run(run_dir)
        # The run's own parameters win, except the budget, which a restart may raise
        params['search_size'] = max(params['search_size'], args.search_size or 0)
        qc_spec = get_spec(params['qc'], **params.get('qc_keywords', {}))
        initial_smiles = json.loads((run_dir / 'initial_molecules.json').read_text())
    else:
        if args.initial_smiles is not None:
            initial_smiles = read_initial_smiles(args.initial_smiles, args.skip_invalid)
        else:
            from moldesign.qm9 import sample_molecules
            initial_smiles = list(dict.fromkeys(sample_molecules(args.initial_count, seed=args.seed)['smiles']))
        parallel = args.parallel_guesses or _default_workers(config_module)
        params = {
            'objective': args.objective, 'search_size': DEFAULT_SEARCH_SIZE if args.search_size is None else args.search_size,
            'initial_count': len(initial_smiles),
            'initial_smiles_file': str(args.initial_smiles) if args.initial_smiles else None,
            'parallel_guesses': parallel, 'batch_size': args.batch_size or max(64, 8 * parallel),
            'qc_prefetch': parallel if args.qc_prefetch is None else args.qc_prefetch,
            'rl_episodes': args.rl_episodes, 'rl_steps': args.rl_steps, 'qc': qc_spec.name, 'qc_keywords': qc_keywords, 'seed': args.seed,
            'config': args.config, 'qc_timeout': args.qc_timeout, 'qc_retries': args.qc_retries,
            'interleave': not args.batch_baseline, 'redishost': args.redishost, 'redisport': args.redisport if args.redishost else None,
        }
        run_dir = args.out_dir / make_run_name(params)
        run_dir.mkdir(parents=True, exist_ok=False)
        dump_json(initial_smiles, run_dir / 'initial_molecules.json')

    store = RunStore(run_dir)
    setup_logging(run_dir, quiet_console=not args.quiet and sys.stderr.isatty())
    logger.info(f'Run directory: {run_dir}' + (' (restart)' if args.restart else ''))
    store.write_json('run_params.json', params)
    store.write_json('qc_spec.json', qc_spec.model_dump(mode='json'))
    store.write_json('host_info.json', get_host_info())

    # Parsl and Colmena
    from moldesign.steer.server import (check_path_for_parsl, kill_process_tree, make_queues, make_task_server,
                                        stop_task_server)
    check_path_for_parsl()
    multiprocessing.set_start_method('fork', force=True)  # The task server is a forked child process
    # The generator thread re-ranks thousands of candidates (CPU-bound) while the consumer thread waits on
    # pipes, files and sockets: with Python's default 5 ms GIL switch interval each of the consumer's I/O
    # steps can wait 5 ms for the GIL, and a QC result's trip to the next submission took ~0.5 s
    sys.setswitchinterval(0.0005)
    # One BLAS thread in the thinker: idle OpenBLAS threads spin and would take the QC workers' cores
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1, user_api='blas')
    config = config_module.make_config(run_dir, params['parallel_guesses'], 1)
    (run_dir / 'parsl_config.txt').write_text(repr(config) + '\n')
    try:
        queues = make_queues(args.redishost, args.redisport, redis_password, prefix=run_dir.name)
    except ConnectionError as exc:
        raise UsageError(f'--redishost: {exc}') from None
    try:
        server = make_task_server(queues, config, qc_timeout=params.get('qc_timeout') or None)
    except ValueError as exc:
        raise UsageError(f'--config: {exc}') from None

    from moldesign.report.progress import ProgressReporter
    from moldesign.steer.thinker import MoleculeDesignThinker
    thinker = MoleculeDesignThinker(
        queues, store, qc_spec, objective=params['objective'], search_size=params['search_size'],
        initial_smiles=initial_smiles, parallel_guesses=params['parallel_guesses'],
        batch_size=params['batch_size'], rl_episodes=params['rl_episodes'], agent=_load_agent(run_dir, params),
        rl_options={'max_steps': params['rl_steps']} if params.get('rl_steps') else {},
        reference_energies=reference_energies, previous_records=previous_records, start_batch=start_batch,
        seed=params['seed'], progress=ProgressReporter(enabled=not args.quiet),
        shutdown_timeout=args.shutdown_timeout, qc_max_retries=params.get('qc_retries', 0),
        interleave=params.get('interleave', True), qc_prefetch=params.get('qc_prefetch'))

    interrupted = {'count': 0, 'signal': None}

    def _on_signal(signum, frame):
        interrupted['count'] += 1
        interrupted['signal'] = signal.Signals(signum).name
        if interrupted['count'] == 1:
            logger.warning(f'{interrupted["signal"]} received: stopping after in-flight QC tasks '
                           f'(up to {args.shutdown_timeout:.0f} s); press Ctrl-C again to exit at once')
            thinker.request_stop()
        else:
            sys.stderr.write(f'Exiting at once. Completed results are in {run_dir}; '
                             f'continue with: python run.py --restart {run_dir}\n')
            store.close()  # Waits for a record being written, so no line is cut
            if server.pid is not None:
                kill_process_tree(server.pid)
            os._exit(EXIT_INTERRUPTED)

    start = time.monotonic()
    server.start()
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    thinker.progress.start()
    try:
        thinker.start()
        while thinker.is_alive():
            thinker.join(0.5)
            if not server.is_alive() and thinker.is_alive() and not thinker.aborted.is_set():
                message = (f'the task server exited unexpectedly (exit code {server.exitcode}); '
                           f'see {run_dir / "runtime.log"} and {run_dir / "parsl"}')
                logger.error(message)
                thinker.abort(message)
    finally:
        thinker.progress.stop()
        stop_task_server(server, queues, timeout=30, on_result=thinker.record_late_result)
        for s, handler in previous.items():
            signal.signal(s, handler)
        store.close()
    wall_time = time.monotonic() - start

    return finish(run_dir, thinker, params, wall_time, interrupted['signal'], args.no_report)


def _default_workers(config_module) -> int:
    if hasattr(config_module, 'default_qc_workers'):
        return config_module.default_qc_workers()
    return 1


def _load_agent(run_dir: Path, params: dict):
    """The MolDQN agent of an interrupted run, or a new one"""
    from moldesign.sample import DQNAgent
    path = run_dir / 'agent.pkl'
    if path.exists():
        with path.open('rb') as fp:
            agent = pickle.load(fp)
        logger.info(f'Restored the MolDQN agent (weights and exploration schedule) from {path}')
        return agent
    return DQNAgent(seed=params['seed'], epsilon_decay=0.97)


def finish(run_dir: Path, thinker, params: dict, wall_time: float, interrupted: Optional[str], no_report: bool) -> int:
    """Summarise the run: best molecules, utilization, summary.json, report; choose the exit code"""
    from moldesign.report.report import format_top_table, load_run, qc_utilization, top_molecules, write_report
    from moldesign.store import dump_json

    utilization = qc_utilization(thinker.records, params['parallel_guesses'])
    errors = [f'{type(e).__name__}: {e}' for e in thinker.errors]
    summary = {
        'objective': params['objective'], 'evaluated_steered': thinker.n_steered_done,
        'evaluated_total': thinker.n_evaluations, 'failed': thinker.n_failed, 'search_size': params['search_size'],
        'batches': thinker.batches_done, 'reranks': thinker.reranks, 'queue_ran_dry': thinker.queue_ran_dry, 'qc_utilization': utilization, 'wall_time': wall_time,
        'complete': thinker.n_steered_done >= params['search_size'] and not errors and not interrupted,
        'interrupted': interrupted, 'errors': errors, 'lost_in_flight': thinker.lost_in_flight,
    }
    dump_json(summary, run_dir / 'summary.json')
    top = top_molecules(load_run(run_dir), n=10)
    summary['top'] = top
    dump_json(summary, run_dir / 'summary.json')

    print(f'\nTop molecules ({params["objective"]}, kcal/mol) after {thinker.n_evaluations} QC evaluations:')
    print(format_top_table(top))
    util_text = f'{utilization:.3f}' if utilization is not None and math.isfinite(utilization) else 'n/a'
    print(f'QC worker utilization (steered phase): {util_text}; wall time {wall_time:.1f} s')
    if not no_report:
        try:
            print(f'Report: {write_report(run_dir)}')
        except Exception as exc:  # The records are safe; a plotting problem must not hide them
            logger.exception(f'Could not write the report: {exc}')
    print(f'Run directory: {run_dir}')

    if errors:
        for e in errors:
            logger.error(f'Run ended with an error: {e}')
        print(f'Continue with: python run.py --restart {run_dir}', file=sys.stderr)
        return EXIT_ERROR
    if interrupted:
        print(f'Interrupted by {interrupted}. Continue with: python run.py --restart {run_dir}', file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
