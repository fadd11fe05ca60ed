"""Search efficiency: the steered search against a Graph GA and random sampling of QM9, same QC, same budget.

For each objective and seed S (budget: ``initial + search`` QC evaluations, failed ones included):

- **steered**: ``run.py --initial-count 8 --search-size 40 --seed S --objective O`` (GFN2-xTB, relaxed
  geometries), read from its ``simulation_records.jsonld``; the 8 random initial molecules count in the budget.
- **variants** of it (``--variant NAME='run.py args'``, repeatable; ``--ablations`` adds
  ``search_methods.ABLATIONS``): the same command with extra arguments, reported like ``steered``.
- **graph-ga**: Graph GA from PyPI ``mol-ga`` (``bench/graph_ga.py``) under the same conditions: the
  application's QC task (``compute_atomization_energy``, GFN2-xTB relaxed), the steered run's initial
  molecules, the same budget; proposals outside the search space score as failures without QC and do
  not count; duplicates are not recomputed.
- **random**: 48 random QM9 molecules (seeded), valued with the SAME GFN2-xTB single points at QM9's
  geometries as the distribution below (no relaxation, no QC run: no failures).

Every result is placed on the distribution of the objective over a random QM9 sample (10,000 molecules;
GFN2-xTB single points at QM9's geometries, cached, see ``bench/common.py``). For each run: the best
objective found, its quantile (fraction of the QM9 sample at least as good; 1/N if better than all),
the number of evaluations needed to reach it (failed QC tasks count), and the discovery-rate ratio
``(1 / quantile) / evaluations needed``; per method and objective: the median ratio over the seeds and
the QC failure rate (failed / evaluations, pooled over the seeds). Relaxed values (steered, variants,
graph-ga) are a little lower than single points: the median shift measured on QM9 molecules is printed,
and a "conservative" ratio moves their best up by it.

    python bench/search_efficiency.py            # full: seeds 1-10, both objectives, steered + graph-ga + random
    python bench/search_efficiency.py --quick    # smoke: seed 1, 4 + 12 evaluations, 2,000 QM9 molecules
    python bench/search_efficiency.py --variant ucb='--acquisition ucb' --methods steered   # a variant

Writes ``bench/results/search_efficiency.json`` and the figure ``docs/search_efficiency.png``.
Runs the campaigns one after the other (never two at a time). The second-to-last line gives the ratio
of the steered search's median to the Graph GA's per objective; the LAST line summarises the median
discovery-rate ratio of every method for each objective.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets OMP_NUM_THREADS before tblite loads)

import numpy as np  # noqa: E402

import search_methods as sm  # noqa: E402
from search_methods import summarise  # noqa: E402,F401  (kept importable from here)
from search_plot import plot  # noqa: E402

logger = logging.getLogger('bench.search_efficiency')

TARGETS = {'atomization_energy': 100., 'atomization_energy_per_atom': 10.}
"""Median discovery-rate ratio the steered search should reach"""
GA_TARGET = 2.
"""Steered median ratio / Graph GA median ratio the steered search should reach, per objective"""
FAILURE_TARGET = 0.10
"""Largest QC failure rate (failed / evaluations over all seeds) wanted of the steered search"""


def _fmt_ratio(x: float) -> str:
    return 'inf' if not np.isfinite(x) else f'{x:.1f}'


def aggregate(runs: Dict[str, List[dict]]) -> dict:
    """Per-method medians and failure rates of one objective (runs that crashed are left out and counted)"""
    ok = {m: [r for r in rs if 'error' not in r] for m, rs in runs.items()}
    out = {
        'median_ratio': {m: float(np.median([r['ratio'] for r in rs])) if rs else float('nan') for m, rs in ok.items()},
        'median_conservative_ratio': {m: float(np.median([r['conservative_ratio'] for r in rs])) if rs else float('nan')
                                      for m, rs in ok.items()},
        'failure_rate': {m: sm.failure_rate(rs) for m, rs in ok.items()},
        'n_failed': {m: int(sum(r['n_failed'] for r in rs)) for m, rs in ok.items()},
        'n_evaluations': {m: int(sum(len(r['values']) for r in rs)) for m, rs in ok.items()},
        'n_crashed': {m: len(rs) - len(ok[m]) for m, rs in runs.items()},
    }
    med = out['median_ratio']
    if sm.STEERED in med and sm.GRAPH_GA in med:
        out['steered_over_graph_ga'] = (med[sm.STEERED] / med[sm.GRAPH_GA] if med[sm.GRAPH_GA] > 0
                                        else float('inf'))
    return out


def print_table(results: Dict[str, dict], methods: List[str]) -> None:
    """Per-seed table of every method, then a line per objective"""
    width = max(8, *(len(m) for m in methods))
    print()
    print(f'{"objective":<28s} {"method":<{width}s} {"seed":>4s} {"best":>10s} {"quantile":>9s} {"evals":>5s} '
          f'{"ratio":>8s} {"cons.q":>9s} {"cons.ratio":>10s} {"failed":>7s} {"wall s":>6s}  molecule')
    for objective, res in results.items():
        for method in methods:
            for r in res['runs'].get(method, []):
                if 'error' in r:
                    print(f'{objective:<28s} {method:<{width}s} {r["seed"]:>4d}  CRASHED: {r["error"][:150]}')
                    continue
                best = f'{r["best"]:>10.2f}' if r['best'] is not None else f'{"-":>10s}'
                print(f'{objective:<28s} {method:<{width}s} {r["seed"]:>4d} {best} {r["quantile"]:>9.5f} '
                      f'{r["evaluations"]:>5d} {r["ratio"]:>8.1f} {r["conservative_quantile"]:>9.5f} '
                      f'{r["conservative_ratio"]:>10.1f} {r["n_failed"]:>3d}/{len(r["values"]):<3d} '
                      f'{r["wall_time"]:>6.0f}  {r["smiles"]}')
        meds = ', '.join(f'{m} {_fmt_ratio(res["median_ratio"][m])} '
                         f'(cons. {_fmt_ratio(res["median_conservative_ratio"][m])}, '
                         f'failures {res["failure_rate"][m]:.1%})' for m in methods if m in res['median_ratio'])
        print(f'{objective}: best of the QM9 sample {res["qm9_best"]:.2f} {res["qm9_best_smiles"]} '
              f'(quantile {1 / res["qm9_sample"]:.5f}); median ratios {meds}; steered target >= {res["target"]:.0f}')


def summary_lines(results: Dict[str, dict], methods: List[str]) -> List[str]:
    """The closing lines: failure rates, steered / graph-ga, medians (LAST)"""
    lines = ['QC failure rate (failed / evaluations, all seeds): ' + '; '.join(
        f'{o} ' + ' '.join(f'{m} {r["failure_rate"][m]:.1%}' for m in methods if m in r['failure_rate'])
        for o, r in results.items()) + f' (steered target <= {FAILURE_TARGET:.0%})']
    if all('steered_over_graph_ga' in r for r in results.values()):
        lines.append('steered / graph-ga (median discovery-rate ratios): ' + ', '.join(
            f'{o} {_fmt_ratio(r["steered_over_graph_ga"])}x' for o, r in results.items())
            + f' (target >= {GA_TARGET:.0f}x)')
    lines.append('median discovery-rate ratio: ' + '; '.join(
        f'{o} ' + ' '.join(f'{m} {_fmt_ratio(r["median_ratio"][m])}' for m in methods if m in r['median_ratio'])
        for o, r in results.items()))
    return lines


def _variant(text: str):
    try:
        return sm.parse_variant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='Smoke mode: seed 1, 4 + 12 evaluations, 2,000 QM9 molecules')
    parser.add_argument('--seeds', type=int, nargs='+', default=None, help='Seeds (default 1-10; quick: 1)')
    parser.add_argument('--objectives', nargs='+', choices=common.OBJECTIVES, default=list(common.OBJECTIVES))
    parser.add_argument('--methods', nargs='+', choices=sm.BUILTIN_METHODS, default=list(sm.BUILTIN_METHODS),
                        help='Built-in methods to run (default: all; variants come in addition)')
    parser.add_argument('--variant', type=_variant, action='append', default=[], metavar="NAME='RUN.PY ARGS'",
                        help="A variant of the steered search: run.py with extra arguments, e.g. "
                             "ucb='--acquisition ucb' (repeatable; reported like steered)")
    parser.add_argument('--ablations', action='store_true',
                        help='Add the variants of search_methods.ABLATIONS: ' + ', '.join(
                            f"{k}='{v}'" for k, v in sm.ABLATIONS.items()))
    parser.add_argument('--initial-count', type=int, default=None, help='Random initial molecules (default 8; quick 4)')
    parser.add_argument('--search-size', type=int, default=None, help='Evaluations after them (default 40; quick 12)')
    parser.add_argument('--qm9-sample', type=int, default=None,
                        help='QM9 molecules in the distribution (default 10,000; quick 2,000)')
    parser.add_argument('--qm9-seed', type=int, default=0, help='Seed of the QM9 distribution sample')
    parser.add_argument('--app-args', default='', help='Extra run.py arguments for steered and every variant, '
                                                       'e.g. "--rl-episodes 32" (experiments)')
    parser.add_argument('--app-repo', type=Path, default=None,
                        help='Run run.py and moldesign of another checkout (a patched copy, for experiments)')
    parser.add_argument('--ga-offspring', type=int, default=None, help='Graph GA children per generation (default 8)')
    parser.add_argument('--ga-population', type=int, default=None,
                        help='Graph GA population kept (default 10,000: all)')
    parser.add_argument('--ga-frac-mutate', type=float, default=None,
                        help="Graph GA fraction of children made by mutation alone (default mol-ga's 0.1)")
    parser.add_argument('--keep-runs', type=Path, default=None, help='Keep the run directories here')
    parser.add_argument('--results-dir', type=Path, default=common.RESULTS_DIR, help='Where the JSON goes')
    parser.add_argument('--figure', type=Path, default=None,
                        help='Figure path (default docs/search_efficiency.png; quick: none)')
    parser.add_argument('--timeout', type=float, default=3600, help='Seconds allowed per campaign')
    args = parser.parse_args(argv)

    seeds = args.seeds or ([1] if args.quick else list(range(1, 11)))
    initial = args.initial_count if args.initial_count is not None else (4 if args.quick else 8)
    search = args.search_size if args.search_size is not None else (12 if args.quick else 40)
    n_qm9 = args.qm9_sample or (2000 if args.quick else 10_000)
    figure = args.figure or (None if args.quick else common.REPO / 'docs' / 'search_efficiency.png')
    budget = initial + search
    app_args = shlex.split(args.app_args)
    variants = dict(args.variant)
    if len(variants) < len(args.variant):
        parser.error('--variant: each name once')
    if args.ablations:
        variants.update({k: shlex.split(v) for k, v in sm.ABLATIONS.items() if k not in variants})
    unknown = sm.unknown_options([a for v in variants.values() for a in v] + app_args, args.app_repo)
    if unknown:
        parser.error(f'run.py does not know {", ".join(unknown)} (see run.py --help; --ablations lists '
                     f'search_methods.ABLATIONS)')
    builtin = [m for m in sm.BUILTIN_METHODS if m in args.methods]
    methods = [m for m in builtin if m == sm.STEERED] + list(variants) + [m for m in builtin if m != sm.STEERED]
    ga_args = [a for flag, value in (('--offspring', args.ga_offspring), ('--population', args.ga_population),
                                     ('--frac-mutate', args.ga_frac_mutate)) if value is not None
               for a in (flag, str(value))]

    machine = common.machine_info()
    print(f'machine: {machine["nproc"]} cores, {machine["cpu_model"]}, load average {machine["loadavg_at_start"]} '
          f'(shared machine: timings are noisy, search results are not)')
    print(f'QC: {common.METHOD} for everyone; budget {budget} evaluations ({initial} initial + {search} more); '
          f'seeds {seeds}; methods {", ".join(methods)}; extra run.py args: {app_args or "none"}'
          + ''.join(f'; variant {k}: {" ".join(v)}' for k, v in variants.items())
          + (f'; graph-ga args: {" ".join(ga_args)}' if ga_args else '')
          + (f'; application from {args.app_repo}' if args.app_repo else ''))

    start = time.perf_counter()
    refs = common.reference_energies()
    table = common.qm9_gfn2_sample(n_qm9, seed=args.qm9_seed, refs=refs)
    shift = common.relaxation_shift(table, n=20 if args.quick else 40, refs=refs)
    print(f'QM9 distribution: {len(table):,} random QM9 molecules (seed {args.qm9_seed}), GFN2-xTB single points at '
          f'QM9 geometries. The steered search and the GA RELAX their molecules: relaxed - single point, median over '
          f'{shift["n"]} QM9 molecules: {shift["atomization_energy"]:+.2f} kcal/mol '
          f'({shift["atomization_energy_per_atom"]:+.3f} per atom); "cons." columns undo it. '
          f'Random sampling uses the single points.', flush=True)

    import graph_ga
    work = common.tmp_work_dir('bench-search-', args.keep_runs)
    results: Dict[str, dict] = {}
    try:
        for objective in args.objectives:
            distribution = table[objective].to_numpy()
            runs: Dict[str, List[dict]] = {m: [] for m in methods}
            for seed in seeds:
                draw = graph_ga.initial_population(initial, seed)  # run.py's initial molecules
                for method in methods:
                    out = work / f'{objective}-seed{seed}-{method}'
                    try:
                        if method == sm.RANDOM:
                            run = sm.run_random(table, objective, budget, seed)
                        elif method == sm.GRAPH_GA:
                            steered = [r for r in runs.get(sm.STEERED, []) if r['seed'] == seed and 'error' not in r]
                            start_set = steered[0]['initial_smiles'] if steered else draw
                            if start_set != draw:
                                logger.warning(f'seed {seed}: the steered run started from {start_set}, not from '
                                               f'the draw {draw}: the GA uses the steered run\'s')
                            run = sm.run_graph_ga(out, objective, start_set, budget, seed, ga_args,
                                                  timeout=args.timeout, repo=args.app_repo)
                        else:
                            run = sm.run_steered(out, objective, initial, search, seed,
                                                 [*app_args, *variants.get(method, [])], args.timeout, args.app_repo)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        print(f'  {objective} seed {seed} {method}: CRASHED: {exc}', flush=True)
                        runs[method].append({'seed': seed, 'error': str(exc)})
                        continue
                    run['seed'] = seed
                    run.update(summarise(np.array(run['values']), run['smiles_evaluated'], distribution,
                                         shift=0. if method == sm.RANDOM else shift[objective]))
                    runs[method].append(run)
                    if method != sm.RANDOM:
                        best = f'{run["best"]:.2f} {run["smiles"]}' if run['best'] is not None else 'none'
                        print(f'  {objective} seed {seed} {method}: best {best} at evaluation {run["evaluations"]}, '
                              f'ratio {run["ratio"]:.1f}, failed {run["n_failed"]}/{len(run["values"])} '
                              f'({run["wall_time"]:.0f} s)', flush=True)
            results[objective] = {
                'runs': runs, 'distribution': distribution.tolist(), 'initial_count': initial, 'qm9_sample': len(table),
                **aggregate(runs),
                'qm9_best': float(distribution.min()), 'qm9_best_smiles': table.smiles.iloc[int(distribution.argmin())],
                'target': TARGETS[objective],
            }
    finally:
        common.remove_tmp(work, args.keep_runs)

    print_table(results, methods)
    elapsed = time.perf_counter() - start
    summary = {
        'machine': machine, 'method': common.METHOD, 'budget': budget, 'initial_count': initial, 'search_size': search,
        'seeds': seeds, 'methods': methods, 'variants': {k: v for k, v in variants.items()},
        'graph_ga_args': ga_args, 'qm9_sample': len(table), 'qm9_seed': args.qm9_seed, 'relaxation_shift': shift,
        'app_args': app_args, 'app_repo': str(args.app_repo) if args.app_repo else None, 'quick': args.quick,
        'targets': {'steered_ratio': TARGETS, 'steered_over_graph_ga': GA_TARGET,
                    'steered_failure_rate': FAILURE_TARGET},
        'elapsed': elapsed,
        'objectives': {o: {k: v for k, v in r.items() if k != 'distribution'} for o, r in results.items()},
    }
    path = common.write_results('search_efficiency_quick' if args.quick else 'search_efficiency', summary) \
        if args.results_dir == common.RESULTS_DIR else _write_to(args.results_dir, summary, args.quick)
    print(f'Results: {path}')
    if figure is not None and results:
        note = f'{budget} evaluations, seeds {seeds[0]}-{seeds[-1]}, QM9 sample of {len(table):,}'
        plot(results, methods, budget, figure, note)
        print(f'Figure: {figure}')
    print(f'Wall time of the benchmark: {elapsed / 60:.1f} min')
    for line in summary_lines(results, methods):
        print(line)
    return 0


def _write_to(directory: Path, summary: dict, quick: bool) -> Path:
    from moldesign.store import dump_json
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ('search_efficiency_quick.json' if quick else 'search_efficiency.json')
    dump_json(summary, path)
    return path


if __name__ == '__main__':
    sys.exit(main())
