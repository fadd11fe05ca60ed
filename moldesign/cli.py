"""The command line of ``run.py``: options in, a :class:`~moldesign.steer.campaign.Campaign` out, an exit code back.

Errors a person makes (an option, a file, a configuration) print one line and exit with code 2, before anything
is created; a traceback is shown only with ``--debug``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

from moldesign.steer.params import (ACQUISITIONS, DEFAULT_SEARCH_SIZE, DEFAULT_VERIFY_KEYWORDS, DEFAULT_VERIFY_QC,
                                    DEFAULT_VERIFY_TOP, OBJECTIVES, QUEUE_POLICIES, SOURCES)

logger = logging.getLogger(__name__)

DESCRIPTION = ('Search QM9 chemical space (H, C, N, O, F; at most 9 heavy atoms) for the molecule of minimal '
               'atomization energy, interleaving quantum chemistry (Parsl executor "qc") with a group-contribution '
               'model and MolDQN reinforcement learning (executor "ml"), steered by a Colmena thinker. '
               'Each run writes runs/<UTC time>-<hash>/ with its parameters, every QC result and a report.')


def _int(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'must be an integer, got {text!r}') from None
        if value < low:
            raise argparse.ArgumentTypeError(f'must be at least {low}, got {text}')
        return value
    return parse


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be a number, got {text!r}') from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f'must be zero or positive, got {text}')
    return value


def _sources(text: str) -> List[str]:
    values = [v.strip() for v in text.split(',') if v.strip()]
    unknown = [v for v in values if v not in SOURCES]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f'a comma-separated list of {", ".join(SOURCES)}, got {text!r}')
    return values


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of run.py (``--help`` explains every option)"""
    parser = argparse.ArgumentParser(prog='run.py', description=DESCRIPTION,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s = parser.add_argument_group('search')
    s.add_argument('--objective', choices=OBJECTIVES, default='atomization_energy',
                   help='Quantity to minimise: total atomization energy, or atomization energy per atom (H included)')
    s.add_argument('--initial-count', type=_int(1), default=16,
                   help='Random QM9 molecules computed with QC before steering starts')
    s.add_argument('--initial-smiles', type=Path, default=None, metavar='FILE',
                   help='File with one SMILES per line (text after white space is ignored; lines starting with # '
                        'are comments) to use as the initial population instead of random QM9 molecules')
    s.add_argument('--skip-invalid', action='store_true',
                   help='Skip invalid lines of --initial-smiles (default: report them all and stop before any QC)')
    s.add_argument('--search-size', type=_int(0), default=None,
                   help=f'Steered molecules to evaluate with QC after the initial population (default '
                        f'{DEFAULT_SEARCH_SIZE}; with --restart, the run\'s own unless larger)')
    s.add_argument('--seed', type=int, default=1, help='Random seed (QM9 sample, MolDQN)')
    s.add_argument('--queue-policy', choices=QUEUE_POLICIES, default='rerank',
                   help='Order of the priority queue: "rerank" re-ranks every candidate with the newest model as '
                        'results arrive; "recency" (the original application) takes the most recent batch first, '
                        'best rank within it, older batches as the fallback')
    s.add_argument('--sources', type=_sources, default=list(SOURCES), metavar='LIST',
                   help='Sources of candidates, comma-separated: moldqn (MolDQN episodes) and neighbours (molecules '
                        'one or two edits from the best computed so far)')
    s.add_argument('--acquisition', choices=ACQUISITIONS, default='greedy',
                   help='How predictions rank candidates: greedy (predicted mean), ucb (mean minus one standard '
                        'deviation), ei (expected improvement over the best so far)')
    s.add_argument('--batch-size', type=_int(1), default=None,
                   help='Candidates a screened MolDQN batch puts in the queue under --queue-policy recency '
                        '(default: max(64, 8 x QC workers))')
    s.add_argument('--rl-episodes', type=_int(1), default=16, help='MolDQN episodes per generator call')
    s.add_argument('--rl-steps', type=_int(1), default=None,
                   help='Steps per MolDQN episode (default: the agent\'s, enough to build 9 heavy atoms)')
    s.add_argument('--rerank-every', type=_int(1), default=1,
                   help='Re-rank the candidates once at least this many new QC results arrived ...')
    s.add_argument('--rerank-interval', type=_float, default=0.,
                   help='... and at least this many seconds passed since the last re-rank (large campaigns)')

    c = parser.add_argument_group('computing')
    c.add_argument('--qc', default='xtb',
                   help='QC specification: "xtb" (GFN2-xTB with tblite), "pyscf/<method>/<basis>", '
                        '"psi4/<method>/<basis>", "nwchem/<method>/<basis>"; append "//xtb" for a single point on '
                        'the GFN2-xTB geometry, e.g. "pyscf/b3lyp/6-31g(2df,p)//xtb"')
    c.add_argument('--qc-keywords', default=None, metavar='JSON',
                   help='Program keywords of --qc as a JSON object, e.g. \'{"nwchem_ranks": 4}\' (NWChem MPI '
                        'ranks), \'{"memory": "8 GB"}\' (psi4), \'{"fmax": 0.02}\' (xtb)')
    c.add_argument('--verify-qc', default='auto', metavar='SPEC',
                   help='A higher level of theory that recomputes every molecule entering the top --verify-top '
                        '(same syntax as --qc), interleaved with the search; the answer is the best verified molecule. '
                        f'"auto": {DEFAULT_VERIFY_QC} (spherical basis functions) when --qc is xtb, none otherwise; '
                        '"none": no verification')
    c.add_argument('--verify-keywords', default=None, metavar='JSON', help='Program keywords of --verify-qc')
    c.add_argument('--verify-top', type=_int(0), default=None,
                   help=f'Verify the molecules that enter the top K by the search method (default {DEFAULT_VERIFY_TOP} '
                        'when verifying, 0 otherwise); with verification learning, also those the corrected model '
                        'estimates among the K best at the verification level')
    c.add_argument('--no-verify-learning', dest='verify_learn', action='store_false',
                   help='Do not correct the search\'s model toward the verified values, nor verify the molecules it '
                        'estimates best (benchmarks: what learning from verification brings)')
    c.add_argument('--verify-share', type=_float, default=0.5,
                   help='Largest share of the QC workers verifying while the search runs (all of them after it; with '
                        'one QC worker, verification waits for the search)')
    c.add_argument('--config', default=None,
                   help='Parsl configuration: a name in config/ (local, slurm, slurm_allocation, polaris, ...) or '
                        'the path of a .py file with make_config(run_dir, qc_workers, ml_workers) (default: local; '
                        'with --restart, the run\'s own)')
    c.add_argument('--qc-workers', '--parallel-guesses', dest='qc_workers', type=_int(1), default=None,
                   help='QC workers kept busy (default: those of the configuration; --parallel-guesses is the '
                        'original application\'s name)')
    c.add_argument('--qc-prefetch', type=_int(0), default=None,
                   help='QC tasks waiting at the workers beyond one per worker, so a worker starts its next molecule '
                        'at once (default: one per worker; 0 submits only when a worker is free)')
    c.add_argument('--qc-bundle', type=_int(1), default=1,
                   help='Molecules per QC task (for fast methods, so task overhead stays small)')
    c.add_argument('--ml-workers', type=_int(1), default=2,
                   help='ML workers: with 2 or more, screening runs beside MolDQN')
    c.add_argument('--qc-timeout', type=_float, default=0,
                   help='Wall-time limit of one QC task in seconds (0: none); a task over it is recorded as failed')
    c.add_argument('--qc-retries', type=_int(0), default=0,
                   help='Times to retry a failed QC task (a task whose worker died is retried once regardless)')
    c.add_argument('--batch-baseline', action='store_true',
                   help='Benchmark baseline: no interleaving (the generator waits until its previous selection is '
                        'evaluated), MolDQN candidates only, --queue-policy recency')
    c.add_argument('--shutdown-timeout', type=_float, default=60,
                   help='Seconds to wait for QC tasks in flight after Ctrl-C, SIGTERM or SIGHUP')
    c.add_argument('--pending-warning', type=_float, default=300, metavar='SECONDS',
                   help='Say on the console why, when the qc or ml workers have returned nothing after this long '
                        '(batch jobs pending in the queue, jobs that failed to start; 0: never)')
    c.add_argument('--monitor', action='store_true',
                   help="Record Parsl's monitoring database in the run directory (monitoring.db)")

    r = parser.add_argument_group('thinker and task server on different hosts')
    r.add_argument('--redishost', default=None,
                   help='Redis server for the queues between thinker and task server (default: pipes)')
    r.add_argument('--redisport', type=_int(1), default=6379, help='Redis port')
    r.add_argument('--redis-password', default=None, help='Redis password (default: $MOLDESIGN_REDIS_PASSWORD)')

    o = parser.add_argument_group('output')
    o.add_argument('--out-dir', type=Path, default=Path('runs'), help='Where run directories are created')
    o.add_argument('--restart', type=Path, default=None, metavar='RUN_DIR',
                   help='Continue an interrupted run (its parameters are reused; --search-size may raise the budget, '
                        '--config may move it)')
    o.add_argument('--quiet', action='store_true', help='No progress on the console')
    o.add_argument('--no-report', action='store_true', help='Do not write report.md and figures at the end')
    o.add_argument('--debug', action='store_true', help='Show tracebacks on the console')
    return parser


def _json_object(text: Optional[str], option: str) -> dict:
    from moldesign.steer.checks import UsageError
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f'{option}: not valid JSON ({exc})') from None
    if not isinstance(value, dict):
        raise UsageError(f'{option}: must be a JSON object, e.g. \'{{"timeout": 600}}\'')
    return value


def build_campaign(args: argparse.Namespace):
    """The campaign the options describe (new, or a restart)

    Raises:
        UsageError: for any invalid input, before anything is created
    """
    from moldesign.steer.campaign import Campaign
    from moldesign.steer.checks import default_qc_workers, load_config_module, read_initial_smiles
    from moldesign.steer.params import RunParams, SessionOptions

    options = SessionOptions(quiet=args.quiet, report=not args.no_report, shutdown_timeout=args.shutdown_timeout,
                             debug=args.debug, block_pending_warning=args.pending_warning,
                             redis_password=args.redis_password or os.environ.get('MOLDESIGN_REDIS_PASSWORD'))
    if args.restart is not None:
        return Campaign.restart(args.restart, options, search_size=args.search_size, config=args.config)
    config = args.config or 'local'
    qc_keywords = _json_object(args.qc_keywords, '--qc-keywords')
    verify_keywords = _json_object(args.verify_keywords, '--verify-keywords')
    workers = args.qc_workers or default_qc_workers(load_config_module(config))
    initial = read_initial_smiles(args.initial_smiles, args.skip_invalid) if args.initial_smiles else None
    baseline = args.batch_baseline
    verify_qc = args.verify_qc
    if verify_qc == 'auto':
        verify_qc = DEFAULT_VERIFY_QC if args.qc.strip().lower() == 'xtb' and not baseline else None
        if verify_qc and not args.verify_keywords:
            verify_keywords = dict(DEFAULT_VERIFY_KEYWORDS)
    elif verify_qc.strip().lower() == 'none':
        verify_qc = None
    params = RunParams(
        objective=args.objective, search_size=DEFAULT_SEARCH_SIZE if args.search_size is None else args.search_size,
        initial_count=len(initial) if initial else args.initial_count,
        initial_smiles_file=str(args.initial_smiles) if args.initial_smiles else None, seed=args.seed,
        qc=args.qc, qc_keywords=qc_keywords, qc_workers=workers,
        qc_prefetch=workers if args.qc_prefetch is None else args.qc_prefetch, qc_bundle=args.qc_bundle,
        qc_timeout=args.qc_timeout, qc_retries=args.qc_retries, ml_workers=args.ml_workers,
        batch_size=args.batch_size or max(64, 8 * workers), rl_episodes=args.rl_episodes, rl_steps=args.rl_steps,
        sources=['moldqn'] if baseline else args.sources, queue_policy='recency' if baseline else args.queue_policy,
        acquisition=args.acquisition, rerank_every=args.rerank_every, rerank_interval=args.rerank_interval,
        interleave=not baseline, verify_qc=verify_qc, verify_keywords=verify_keywords,
        verify_top=(DEFAULT_VERIFY_TOP if verify_qc else 0) if args.verify_top is None else args.verify_top,
        verify_share=args.verify_share, verify_learn=args.verify_learn, config=config, redishost=args.redishost,
        redisport=args.redisport if args.redishost else None, monitor=args.monitor)
    if params.verify_top and not params.verify_qc:
        from moldesign.steer.checks import UsageError
        raise UsageError('--verify-top: needs --verify-qc (the level of theory that verifies)')
    return Campaign.create(params, args.out_dir, options, initial_smiles=initial)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the campaign the command line describes

    Until the campaign takes the signals over (:class:`~moldesign.steer.signals.StopSignals`), SIGTERM and SIGHUP
    act like Ctrl-C: a run directory being created is removed again, and the exit is one line with code 130.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``)
    Returns:
        Exit code: 0 complete, 1 error, 2 usage error, 130 interrupted
    """
    from moldesign.steer.checks import UsageError
    prog = 'run.py'
    args = campaign = None
    try:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, _interrupt)
        parser = make_parser()
        prog = parser.prog
        args = parser.parse_args(argv)
        campaign = build_campaign(args)
        return campaign.run()
    except UsageError as exc:
        print(f'{prog}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if campaign is not None:  # Its run directory is complete: it can be continued
            print(f'{prog}: interrupted before any task started. Continue with: python run.py --restart '
                  f'{campaign.run_dir}', file=sys.stderr)
        else:
            print(f'{prog}: interrupted before the run started; nothing was computed', file=sys.stderr)
        return 130
    except Exception as exc:
        if args is None or args.debug:
            raise
        print(f'{prog}: error: {type(exc).__name__}: {exc} (run with --debug for the traceback)', file=sys.stderr)
        return 1
