"""Learning from verification, replayed on real values: which molecules to verify when the search method misranks.

A run verifies the molecules that enter its top K by the search method (GFN2-xTB) at a higher level; with
learning on (the default), it also fits a model of the difference between the levels (``delta``, the
application's group-contribution model, :func:`moldesign.score.train_steering_model`) and verifies the molecules
that the corrected estimate (:func:`moldesign.score.estimate_verified`) puts among the best. In a real run the
verification level is DFT, whose calculations are too slow on this machine for a search to collect many of them
(``verified_search.py``); this benchmark replays the choice of what to verify on values already computed:

- search level: GFN2-xTB single points of a QM9 sample at QM9's geometries (``common.qm9_gfn2_sample``, the
  distribution of ``search_efficiency.py``, cached);
- verification level: QM9's own B3LYP/6-31G(2df,p) electronic atomization energies (U0 minus ZPVE, minus QM9's
  atom references), the yardstick of ``verified_search.py``.

Two kinds of pool stand for what a search has computed:

- QM9 (default): per seed, ``--pool`` molecules drawn from the sample; the verification level is known for all;
- ``--runs DIR ...``: the successfully computed molecules of kept runs (``search_efficiency.py --keep-runs``), with
  their GFN2-xTB values and relaxed geometries; a molecule a strategy picks is verified with ``--verify-qc`` (the
  application's QC task; default B3LYP/6-31G* on the GFN2 geometry, the runs' ``auto`` level) and cached in the
  bench cache directory, so strategies and re-runs share the calculations.

Then ``--verifications`` molecules are verified one at a time, each strategy choosing the next:

- ``search``: the best unverified molecule by the search level (``--no-verify-learning``: the top K, in order);
- ``estimate``: the first :data:`~moldesign.score.model.MIN_VERIFIED` as ``search``; then the unverified molecule
  the corrected estimate puts best, among the :data:`~moldesign.steer.generator.ESTIMATE_POOL` best by the search
  level (the application's rule, ``_verify_estimated_best``);
- ``alternate``: ``search`` and ``estimate`` in turn (a run with learning verifies both the search's entrants and the
  estimated best);
- ``random``: a random unverified molecule (the floor; not in runs mode, where each pick costs a DFT calculation).

Per strategy, median over the pools: the best verified value after v verifications, and how many verifications it
took to verify the best molecule any strategy verified in that pool. What it does not replay: the search moving
toward what the corrected model rewards (a run learns while it searches; here the pool is fixed).

    python bench/verify_learning.py                  # 10 QM9 pools of 2,000, 30 verifications (10 s)
    python bench/verify_learning.py --runs /tmp/pa --workers 2      # a per-atom search's molecules (20 min)

Writes ``bench/results/verify_learning.json`` (runs mode: ``verify_learning_runs.json``). The LAST line gives, per
strategy, the median best verified value after 3 and after the last verification, and the median number of
verifications to the pool's best.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

STRATEGIES = ('search', 'estimate', 'alternate', 'random')


def per_objective(pool: pd.DataFrame, objective: str):
    """What divides a total atomization energy of the pool into the objective (atom counts, or 1)"""
    return pool['n_atoms'].to_numpy(float) if objective == 'atomization_energy_per_atom' else 1.


def load_levels(n: int, seed: int) -> pd.DataFrame:
    """The QM9 sample with both levels: GFN2-xTB (search) and QM9's B3LYP electronic values (verification)

    Returns:
        smiles, n_atoms, search (GFN2 total atomization energy, kcal/mol), verified (QM9 electronic, kcal/mol)
    """
    from moldesign.qm9 import load_qm9
    sample = common.qm9_gfn2_sample(n, seed)
    qm9 = load_qm9().set_index('qm9_index')
    electronic = qm9.loc[sample['qm9_index'], 'electronic_atomization_energy'].to_numpy()
    return pd.DataFrame({'smiles': sample['smiles'], 'n_atoms': sample['n_atoms'],
                         'search': sample['atomization_energy'], 'verified': electronic})


def load_run_pool(run_dir: Path) -> pd.DataFrame:
    """The molecules a search computed successfully, with their GFN2-xTB values and relaxed geometries

    Returns:
        smiles, n_atoms, search (total atomization energy, kcal/mol), xyz
    """
    from moldesign.store import load_run
    rows = []
    for record in load_run(run_dir).molecule_records:
        if record.get('success') and isinstance(record.get('value'), dict):
            value = record['value']
            rows.append((value['smiles'], value['n_atoms'], value['atomization_energy'], value['xyz']))
    pool = pd.DataFrame(rows, columns=['smiles', 'n_atoms', 'search', 'xyz'])
    return pool.drop_duplicates('smiles').reset_index(drop=True)


class Verifier:
    """Verification-level total atomization energies computed with the application's QC task, cached on disk

    Args:
        spec_name: QC specification (``--verify-qc`` syntax)
        cache: JSON file of earlier values (SMILES -> kcal/mol, None for a failure)
    """

    def __init__(self, spec_name: str, cache: Path):
        from moldesign.simulate import get_spec
        self.spec = get_spec(spec_name)
        self.cache = cache
        self.values: Dict[str, Optional[float]] = json.loads(cache.read_text()) if cache.is_file() else {}
        self.refs = common.reference_energies(spec_name)
        self.computed = 0

    def __call__(self, smiles: str, xyz: Optional[str] = None) -> Optional[float]:
        from moldesign.simulate import QCFailure, compute_atomization_energy
        from moldesign.store import dump_json
        if smiles not in self.values:
            try:
                value = compute_atomization_energy(smiles, self.spec, self.refs, xyz=xyz).atomization_energy
            except QCFailure as exc:
                print(f'    {smiles}: {exc}', flush=True)
                value = None
            self.values[smiles] = value
            self.computed += 1
            dump_json(self.values, self.cache)
        return self.values[smiles]


def replay(pool: pd.DataFrame, strategy: str, n_verify: int, objective: str, rng: np.random.Generator,
           verify: Callable[[int], Optional[float]]) -> List[Tuple[int, Optional[float]]]:
    """Choose ``n_verify`` molecules of ``pool`` to verify, one at a time

    Args:
        pool: Rows of :func:`load_levels` or :func:`load_run_pool`
        strategy: One of :data:`STRATEGIES`
        n_verify: Verifications
        objective: ``atomization_energy`` or ``atomization_energy_per_atom``
        rng: Random state (``random``)
        verify: Verification-level total atomization energy of a pool position (None: the calculation failed)
    Returns:
        (position in ``pool``, verified total atomization energy) of the verified molecules, in order
    """
    from moldesign.score import estimate_verified, train_model
    from moldesign.score.model import MIN_VERIFIED
    from moldesign.steer.generator import ESTIMATE_POOL

    search = pool['search'].to_numpy() / per_objective(pool, objective)
    by_search = list(np.argsort(search, kind='stable'))
    smiles, energies = pool['smiles'].tolist(), pool['search'].to_numpy()
    chosen: List[Tuple[int, Optional[float]]] = []
    for step in range(min(n_verify, len(pool))):
        done = {i for i, _ in chosen}
        left = [i for i in by_search if i not in done]
        known = [(i, v) for i, v in chosen if v is not None]
        use_estimate = (strategy == 'estimate' or (strategy == 'alternate' and step % 2 == 1))
        if strategy == 'random':
            pick = int(rng.choice(left))
        elif use_estimate and len(known) >= MIN_VERIFIED:
            delta = train_model([smiles[i] for i, _ in known], [v - energies[i] for i, v in known])
            candidates = left[:ESTIMATE_POOL]
            estimate = estimate_verified(delta, [smiles[i] for i in candidates], energies[candidates], objective)
            pick = candidates[int(np.argmin(estimate))]
        else:
            pick = left[0]
        chosen.append((pick, verify(pick)))
    return chosen


def _qm9_cases(args) -> Tuple[List[Tuple[str, pd.DataFrame, None]], str]:
    """Pools drawn from the QM9 sample, verified by lookup of QM9's values (no cache: the third item is None)"""
    levels = load_levels(args.qm9_sample, 0)
    scale = per_objective(levels, args.objective)
    both = pd.DataFrame({'search': levels['search'] / scale, 'verified': levels['verified'] / scale})
    header = (f'{len(levels):,} QM9 molecules, {args.objective}: Spearman between GFN2-xTB and QM9\'s B3LYP '
              f'{both.corr(method="spearman").iloc[0, 1]:.3f}; pools of {args.pool}')
    cases = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        pool = levels.iloc[rng.choice(len(levels), size=min(args.pool, len(levels)), replace=False)]
        cases.append((f'seed {seed}', pool.reset_index(drop=True), None))
    return cases, header


def _run_dirs(paths: List[Path]) -> List[Path]:
    """Run directories given directly or found below the paths (those with simulation records)"""
    found = []
    for path in paths:
        found += [p.parent for p in sorted(path.rglob('simulation_records.jsonld'))]
    return found


def run_case(name: str, pool: pd.DataFrame, args, cache: Optional[Path]) -> Dict[str, dict]:
    """Replay every strategy on one pool

    Returns:
        Per strategy: the verified molecules, their values and the best so far (objective units)
    """
    scale = np.broadcast_to(per_objective(pool, args.objective), len(pool))
    if cache is None:  # QM9 mode: the verification level is known for every molecule
        def verify(i: int) -> Optional[float]:
            return float(pool['verified'][i])
    else:
        verifier = Verifier(args.verify_qc, cache)

        def verify(i: int) -> Optional[float]:
            return verifier(pool['smiles'][i], pool['xyz'][i])
    out = {}
    for strategy in args.strategies:
        chosen = replay(pool, strategy, args.verifications, args.objective, np.random.default_rng(0), verify)
        values = [None if v is None else float(v / scale[i]) for i, v in chosen]
        best = np.minimum.accumulate([np.inf if v is None else v for v in values]).tolist()
        out[strategy] = {'verified': [pool['smiles'][i] for i, _ in chosen], 'values': values, 'best': best,
                         'search': [float(pool['search'][i] / scale[i]) for i, _ in chosen]}
    line = '  '.join(f'{s} {r["best"][-1]:.1f}' for s, r in out.items())
    print(f'  {name}: {len(pool)} molecules; best verified after {args.verifications}: {line}', flush=True)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seeds', type=int, nargs='+', default=list(range(1, 11)), help='QM9 mode: pools')
    parser.add_argument('--objective', choices=common.OBJECTIVES, default='atomization_energy_per_atom')
    parser.add_argument('--pool', type=int, default=2000, help='QM9 mode: molecules computed by the search')
    parser.add_argument('--qm9-sample', type=int, default=10000, help='QM9 molecules with GFN2 values to draw from')
    parser.add_argument('--runs', type=Path, nargs='+', default=None,
                        help='Replay on the molecules these runs computed (run directories, or directories holding '
                             'them, e.g. search_efficiency.py --keep-runs), verified with --verify-qc')
    parser.add_argument('--verify-qc', default='pyscf/b3lyp/6-31g*//xtb', help='Runs mode: verification level')
    parser.add_argument('--workers', type=int, default=1, help='Runs mode: runs replayed in parallel')
    parser.add_argument('--verifications', type=int, default=None, help='Molecules verified per pool (30; runs: 10)')
    parser.add_argument('--results-dir', type=Path, default=common.RESULTS_DIR, help='Where the JSON goes')
    parser.add_argument('--strategies', nargs='+', choices=STRATEGIES, default=None,
                        help='Default: all (runs mode: all but random, whose picks would each cost a DFT calculation)')
    args = parser.parse_args(argv)
    common.use_this_checkout()
    from moldesign.store import dump_json
    runs_mode = args.runs is not None
    args.verifications = args.verifications or (10 if runs_mode else 30)
    args.strategies = args.strategies or [s for s in STRATEGIES if not (runs_mode and s == 'random')]

    start = time.perf_counter()
    if runs_mode:
        dirs = _run_dirs(args.runs)
        if not dirs:
            parser.error(f'no run directory (with simulation_records.jsonld) under {args.runs}')
        key = hashlib.sha256(args.verify_qc.encode()).hexdigest()[:8]
        cases = [(d.parent.name if d.parent.name not in ('', '.') else d.name, load_run_pool(d),
                  common.bench_cache_dir() / f'verify-{key}-{d.name}.json') for d in dirs]
        print(f'{len(dirs)} runs, {args.objective}, verified with {args.verify_qc}')
    else:
        cases, header = _qm9_cases(args)
        print(header)
    print(f'{args.verifications} verifications per pool, strategies {", ".join(args.strategies)}')

    if runs_mode and args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(run_case, *zip(*[(n, p, args, c) for n, p, c in cases])))
    else:
        results = [run_case(n, p, args, c) for n, p, c in cases]

    marks = sorted({v for v in (1, 2, 3, 5, 10, 20, 30, args.verifications) if v <= args.verifications})
    unit = 'kcal/mol per atom' if args.objective == 'atomization_energy_per_atom' else 'kcal/mol'
    level = args.verify_qc if runs_mode else "QM9's B3LYP/6-31G(2df,p)"
    print(f'\nMedian over {len(cases)} pools of the best verified value ({unit}, {level}) after v verifications, '
          f'and verifications to the best any strategy verified in the pool (pools where reached):')
    print(f'{"strategy":<10s} ' + ' '.join(f'{"v=" + str(v):>8s}' for v in marks) + f'  {"to best":>12s}')
    summary = {}
    for strategy in args.strategies:
        medians, to_best = {}, []
        for v in marks:
            medians[v] = float(np.median([r[strategy]['best'][min(v, len(r[strategy]['best'])) - 1]
                                          for r in results]))
        for r in results:
            target = min(r[s]['best'][-1] for s in args.strategies)
            hit = np.flatnonzero(np.asarray(r[strategy]['best']) <= target + 1e-6)
            to_best.append(int(hit[0]) + 1 if len(hit) else None)
        reached = [t for t in to_best if t is not None]
        median_to_best = float(np.median([t if t is not None else np.inf for t in to_best]))
        summary[strategy] = {'medians': medians, 'to_best': to_best, 'to_best_median': median_to_best,
                             'reached': len(reached), 'pools': len(results)}
        print(f'{strategy:<10s} ' + ' '.join(f'{medians[v]:>8.2f}' for v in marks) +
              f'  {median_to_best:>5.0f} ({len(reached)}/{len(results)})')
    path = args.results_dir / ('verify_learning' + ('_runs' if runs_mode else '') + '.json')
    args.results_dir.mkdir(parents=True, exist_ok=True)
    dump_json({
        'machine': common.machine_info(), 'objective': args.objective, 'mode': 'runs' if runs_mode else 'qm9',
        'verify_qc': args.verify_qc if runs_mode else 'QM9 B3LYP/6-31G(2df,p) electronic',
        'verifications': args.verifications, 'pools': [n for n, _, _ in cases],
        'results': results, 'summary': summary, 'seconds': time.perf_counter() - start}, path)
    print(f'Results: {path} ({time.perf_counter() - start:.0f} s)')
    last = args.verifications
    few = min(3, last)
    print('verification learning: ' + '; '.join(
        f'{s} best after {few} {summary[s]["medians"][few]:.2f}, after {last} {summary[s]["medians"][last]:.2f}, '
        f'to best {summary[s]["to_best_median"]:.0f}' for s in args.strategies))
    return 0


if __name__ == '__main__':
    sys.exit(main())
