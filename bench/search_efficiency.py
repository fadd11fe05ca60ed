"""Search efficiency: the application's steered search against random sampling of QM9, same QC, same budget.

For each objective and seed:

- **steered**: ``run.py --initial-count 8 --search-size 40 --seed S --objective O`` (GFN2-xTB, relaxed
  geometries), read from its ``simulation_records.jsonld``; the 8 random initial molecules count in the budget.
- **random**: 48 random QM9 molecules (seeded), valued with the SAME GFN2-xTB single points at QM9's
  geometries as the distribution below (no relaxation).

Every result is placed on the distribution of the objective over a random QM9 sample (10,000 molecules;
GFN2-xTB single points at QM9's geometries, cached, see ``bench/common.py``). For each run: the best
objective found, its quantile (fraction of the QM9 sample at least as good; 1/N if better than all),
the number of evaluations needed to reach it (failed QC tasks count), and the discovery-rate ratio
``(1 / quantile) / evaluations needed``. The application's values are relaxed, hence a little lower
than single points: the median shift measured on QM9 molecules is printed, and a "conservative"
ratio is also given, with the steered best moved up by that shift.

    python bench/search_efficiency.py            # full: seeds 1-5, both objectives, 10,000 QM9 molecules
    python bench/search_efficiency.py --quick    # smoke: seed 1, 4 + 12 evaluations, 2,000 QM9 molecules

Writes ``bench/results/search_efficiency.json`` and the figure ``docs/search_efficiency.png``.
Runs the campaigns one after the other (never two at a time). The LAST line summarises the median
discovery-rate ratio of the steered search for each objective.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets OMP_NUM_THREADS before tblite loads)

import numpy as np  # noqa: E402

logger = logging.getLogger('bench.search_efficiency')

TARGETS = {'atomization_energy': 100., 'atomization_energy_per_atom': 10.}
"""Median discovery-rate ratio the steered search should reach"""
UNITS = {'atomization_energy': 'kcal/mol', 'atomization_energy_per_atom': 'kcal/mol per atom'}


def summarise(curve: np.ndarray, smiles: List[Optional[str]], distribution: np.ndarray,
              shift: float = 0.) -> Dict[str, object]:
    """Best value, its quantile, evaluations needed and discovery-rate ratio of one search

    Args:
        curve: Objective value of each evaluation, in order (NaN for failures)
        smiles: Molecule of each evaluation
        distribution: Objective over the QM9 sample
        shift: Median (relaxed - single point) of the objective: subtracted from the best value for the
            conservative figures (relaxed -> single-point scale)
    Returns:
        best, smiles, quantile, evaluations, ratio, conservative_quantile, conservative_ratio
    """
    finite = np.where(np.isfinite(curve))[0]
    if not len(finite):
        return {'best': None, 'smiles': None, 'quantile': 1., 'evaluations': len(curve), 'ratio': 0.,
                'conservative_quantile': 1., 'conservative_ratio': 0.}
    best = float(np.nanmin(curve))
    index = int(finite[np.argmin(curve[finite])])  # First evaluation reaching the best
    q = common.quantile(best, distribution)
    qc = common.quantile(best - shift, distribution)
    return {'best': best, 'smiles': smiles[index], 'quantile': q, 'evaluations': index + 1,
            'ratio': (1 / q) / (index + 1), 'conservative_quantile': qc, 'conservative_ratio': (1 / qc) / (index + 1)}


def steered_values(run_dir: Path, objective: str, budget: int) -> tuple[np.ndarray, List[Optional[str]]]:
    """Objective of each QC evaluation of a run (NaN for failures), in evaluation order, up to the budget"""
    records = [r for r in common.molecule_records(run_dir) if r.get('evaluation') is not None]
    records = [r for r in records if r['evaluation'] <= budget]
    values = np.array([r['objective'] if r.get('success') and r.get('objective') is not None else np.nan
                       for r in records], dtype=float)
    return values, [r.get('smiles') for r in records]


def plot(results: Dict[str, dict], path: Path, title_note: str) -> None:
    """Best-so-far curves, steered vs random, one panel per objective"""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    objectives = list(results)
    fig, axes = plt.subplots(1, len(objectives), figsize=(6.2 * len(objectives), 5.4), squeeze=False)
    colors = {'steered': 'tab:blue', 'random': 'tab:gray'}
    labels = {'steered': 'steered search (run.py, GFN2 relaxed)', 'random': 'random QM9 sample (GFN2 single points)'}
    for ax, objective in zip(axes[0], objectives):
        res = results[objective]
        for method in ('random', 'steered'):
            curves = np.array([common.best_so_far(run['values']) for run in res['runs'][method]])
            x = np.arange(1, curves.shape[1] + 1)
            for curve in curves:
                ax.plot(x, curve, color=colors[method], alpha=0.25, lw=0.8)
            ax.plot(x, np.median(curves, axis=0), color=colors[method], lw=2.2,
                    label=f'{labels[method]}, median of {len(curves)} seeds')
        dist = np.sort(res['distribution'])
        for frac, style in ((1e-2, '--'), (1e-3, ':')):
            ax.axhline(np.quantile(dist, frac), color='tab:red', ls=style, lw=1,
                       label=f'QM9 sample: best {frac:.1%}')
        ax.axhline(dist[0], color='tab:red', lw=1, label=f'QM9 sample: best of {len(dist):,} molecules')
        ax.axvline(res['initial_count'] + 0.5, color='k', lw=0.6, alpha=0.5, label='steering starts')
        # Show the interesting part: from the QM9 median down to the best value found
        lowest = min(dist[0], *(np.nanmin(np.array(run['values'], dtype=float)) for rs in res['runs'].values() for run in rs))
        span = np.median(dist) - lowest
        ax.set_ylim(lowest - 0.05 * span, np.median(dist))
        ax.set_xlabel('QC evaluations (GFN2-xTB), initial random molecules included')
        ax.set_ylabel(f'best so far ({UNITS[objective]})')
        ax.set_title(f'{objective}\nmedian discovery-rate ratio: steered {res["median_ratio"]["steered"]:.1f}, '
                     f'random {res["median_ratio"]["random"]:.1f}', fontsize=10)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc='lower center', ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f'Steered search vs random sampling, same QC budget ({title_note}); lower is better', fontsize=11)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='Smoke mode: seed 1, 4 + 12 evaluations, 2,000 QM9 molecules')
    parser.add_argument('--seeds', type=int, nargs='+', default=None, help='Seeds (default 1-5; quick: 1)')
    parser.add_argument('--objectives', nargs='+', choices=common.OBJECTIVES, default=list(common.OBJECTIVES))
    parser.add_argument('--initial-count', type=int, default=None, help='Random initial molecules (default 8; quick 4)')
    parser.add_argument('--search-size', type=int, default=None, help='Steered evaluations (default 40; quick 12)')
    parser.add_argument('--qm9-sample', type=int, default=None, help='QM9 molecules in the distribution (default 10,000; quick 2,000)')
    parser.add_argument('--qm9-seed', type=int, default=0, help='Seed of the QM9 distribution sample')
    parser.add_argument('--app-args', default='', help='Extra run.py arguments, e.g. "--rl-episodes 32" (experiments)')
    parser.add_argument('--app-repo', type=Path, default=None,
                        help='Run run.py and moldesign of another checkout (a patched copy, for experiments)')
    parser.add_argument('--keep-runs', type=Path, default=None, help='Keep the run directories here')
    parser.add_argument('--results-dir', type=Path, default=common.RESULTS_DIR, help='Where the JSON goes')
    parser.add_argument('--figure', type=Path, default=None,
                        help='Figure path (default docs/search_efficiency.png; quick: none)')
    parser.add_argument('--timeout', type=float, default=3600, help='Seconds allowed per campaign')
    args = parser.parse_args(argv)

    seeds = args.seeds or ([1] if args.quick else [1, 2, 3, 4, 5])
    initial = args.initial_count if args.initial_count is not None else (4 if args.quick else 8)
    search = args.search_size if args.search_size is not None else (12 if args.quick else 40)
    n_qm9 = args.qm9_sample or (2000 if args.quick else 10_000)
    figure = args.figure or (None if args.quick else common.REPO / 'docs' / 'search_efficiency.png')
    budget = initial + search
    app_args = shlex.split(args.app_args)
    machine = common.machine_info()
    print(f'machine: {machine["nproc"]} cores, {machine["cpu_model"]}, load average {machine["loadavg_at_start"]} '
          f'(shared machine: timings are noisy, search results are not)')
    print(f'QC: {common.METHOD} for everyone; budget {budget} evaluations ({initial} initial + {search} steered); '
          f'seeds {seeds}; extra run.py args: {app_args or "none"}'
          + (f'; application from {args.app_repo}' if args.app_repo else ''))

    start = time.perf_counter()
    refs = common.reference_energies()
    table = common.qm9_gfn2_sample(n_qm9, seed=args.qm9_seed, refs=refs)
    shift = common.relaxation_shift(table, n=20 if args.quick else 40, refs=refs)
    print(f'QM9 distribution: {len(table):,} random QM9 molecules (seed {args.qm9_seed}), GFN2-xTB single points at '
          f'QM9 geometries. The steered search RELAXES its molecules: relaxed - single point, median over '
          f'{shift["n"]} QM9 molecules: {shift["atomization_energy"]:+.2f} kcal/mol '
          f'({shift["atomization_energy_per_atom"]:+.3f} per atom); "cons." columns undo it. '
          f'Random sampling uses the single points.')

    work = common.tmp_work_dir('bench-search-', args.keep_runs)
    results: Dict[str, dict] = {}
    try:
        for objective in args.objectives:
            distribution = table[objective].to_numpy()
            runs = {'steered': [], 'random': []}
            for seed in seeds:
                # Random sampling of QM9 with the same budget, same GFN2 numbers as the distribution
                rng = np.random.default_rng(seed)
                chosen = table.iloc[rng.choice(len(table), size=budget, replace=False)]
                values = chosen[objective].to_numpy(dtype=float)
                runs['random'].append({'seed': seed, 'values': values.tolist(),
                                       **summarise(values, chosen['smiles'].tolist(), distribution)})

                out = work / f'{objective}-seed{seed}'
                t0 = time.perf_counter()
                run_dir = common.run_app(out, ['--initial-count', str(initial), '--search-size', str(search),
                                               '--seed', str(seed), '--objective', objective, *app_args],
                                         out / 'run.log', timeout=args.timeout, repo=args.app_repo)
                values, smiles = steered_values(run_dir, objective, budget)
                runs['steered'].append({'seed': seed, 'values': values.tolist(), 'run_dir': str(run_dir),
                                        'wall_time': time.perf_counter() - t0, 'n_failed': int(np.isnan(values).sum()),
                                        **summarise(values, smiles, distribution, shift=shift[objective])})
                s = runs['steered'][-1]
                print(f'  {objective} seed {seed}: steered best {s["best"]:.2f} {s["smiles"]} at evaluation '
                      f'{s["evaluations"]}, ratio {s["ratio"]:.1f} ({s["wall_time"]:.0f} s)', flush=True)
            results[objective] = {
                'runs': runs, 'distribution': distribution.tolist(), 'initial_count': initial,
                'median_ratio': {m: float(np.median([r['ratio'] for r in rs])) for m, rs in runs.items()},
                'median_conservative_ratio': float(np.median([r['conservative_ratio'] for r in runs['steered']])),
                'qm9_best': float(distribution.min()), 'qm9_best_smiles': table.smiles.iloc[int(distribution.argmin())],
                'target': TARGETS[objective],
            }
    finally:
        common.remove_tmp(work, args.keep_runs)

    # Table
    print()
    print(f'{"objective":<28s} {"method":<8s} {"seed":>4s} {"best":>10s} {"quantile":>9s} {"evals":>5s} '
          f'{"ratio":>8s} {"cons.q":>9s} {"cons.ratio":>10s}  molecule')
    for objective, res in results.items():
        for method in ('random', 'steered'):
            for r in res['runs'][method]:
                print(f'{objective:<28s} {method:<8s} {r["seed"]:>4d} {r["best"]:>10.2f} {r["quantile"]:>9.5f} '
                      f'{r["evaluations"]:>5d} {r["ratio"]:>8.1f} {r["conservative_quantile"]:>9.5f} '
                      f'{r["conservative_ratio"]:>10.1f}  {r["smiles"]}')
        print(f'{objective}: best of the QM9 sample {res["qm9_best"]:.2f} {res["qm9_best_smiles"]} '
              f'(quantile {1 / len(res["distribution"]):.5f}); median ratio random {res["median_ratio"]["random"]:.1f}, '
              f'steered {res["median_ratio"]["steered"]:.1f} (conservative {res["median_conservative_ratio"]:.1f}), '
              f'target >= {res["target"]:.0f}')

    summary = {
        'machine': machine, 'method': common.METHOD, 'budget': budget, 'initial_count': initial, 'search_size': search,
        'seeds': seeds, 'qm9_sample': len(table), 'qm9_seed': args.qm9_seed, 'relaxation_shift': shift,
        'app_args': app_args, 'app_repo': str(args.app_repo) if args.app_repo else None, 'quick': args.quick,
        'elapsed': time.perf_counter() - start,
        'objectives': {o: {k: v for k, v in r.items() if k != 'distribution'} for o, r in results.items()},
    }
    path = common.write_results('search_efficiency_quick' if args.quick else 'search_efficiency', summary) \
        if args.results_dir == common.RESULTS_DIR else _write_to(args.results_dir, summary, args.quick)
    print(f'Results: {path}')
    if figure is not None and results:
        note = f'{budget} evaluations, seeds {seeds[0]}-{seeds[-1]}, QM9 sample of {len(table):,}'
        plot(results, figure, note)
        print(f'Figure: {figure}')
    for objective, res in results.items():
        print(f'median discovery-rate ratio ({objective}): {res["median_ratio"]["steered"]:.1f}')
    if len(results) > 1:
        print('median discovery-rate ratio: ' + ', '.join(
            f'{o} {r["median_ratio"]["steered"]:.1f} (target {r["target"]:.0f})' for o, r in results.items()))
    return 0


def _write_to(directory: Path, summary: dict, quick: bool) -> Path:
    from moldesign.store import dump_json
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ('search_efficiency_quick.json' if quick else 'search_efficiency.json')
    dump_json(summary, path)
    return path


if __name__ == '__main__':
    sys.exit(main())
