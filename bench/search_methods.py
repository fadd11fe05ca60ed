"""The searches compared by ``search_efficiency.py``: how each one is run and what is kept of it.

Each ``run_*`` function runs one search for one objective and seed and returns its record: the
objective of every QC evaluation in order (``values``, NaN for a failure), the molecules
(``smiles``), ``n_failed``, ``wall_time``, plus what is particular to the method. The figures
(best, quantile, evaluations needed, discovery-rate ratio) are added by :func:`summarise`.

- **steered** and its **variants**: ``run.py`` as a subprocess (:func:`run_steered`); a variant is
  the same command with extra ``run.py`` arguments (``--variant NAME='ARGS'``, :func:`parse_variant`).
- **graph-ga**: mol-ga's Graph GA (``bench/graph_ga.py``) as a subprocess (:func:`run_graph_ga`).
- **random**: random molecules of the QM9 sample, valued with its GFN2 single points (:func:`run_random`).
"""
from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

import common

logger = logging.getLogger(__name__)

STEERED = 'steered'
GRAPH_GA = 'graph-ga'
RANDOM = 'random'
BUILTIN_METHODS = (STEERED, GRAPH_GA, RANDOM)
"""The methods of a default invocation"""

ABLATIONS: Dict[str, str] = {
    'queue-recency': '--queue-policy recency',
    'sources-moldqn': '--sources moldqn',
    'sources-neighbours': '--sources neighbours',
    'acq-ucb': '--acquisition ucb',
    'acq-ei': '--acquisition ei',
}
"""Variants of the steered search added by ``--ablations``: name -> extra ``run.py`` arguments.

Each switches off or swaps one part of the steering against the default (``--queue-policy rerank --sources
moldqn,neighbours --acquisition greedy``): the original's queue order, MolDQN only (neighbourhoods off),
neighbourhoods only (MolDQN off), and the two acquisition functions that use the model's uncertainty."""

GA_SCRIPT = Path(__file__).resolve().parent / 'graph_ga.py'
GA_HASH_SEED = '0'
"""PYTHONHASHSEED of the GA subprocess (mol-ga iterates over sets of SMILES: fixed for reproducibility)"""


def parse_variant(text: str) -> Tuple[str, List[str]]:
    """Parse ``NAME=run.py arguments`` (the value of ``--variant``)

    Args:
        text: e.g. ``"ucb=--acquisition ucb"``
    Returns:
        The name and the argument list
    Raises:
        ValueError: if there is no ``=``, the name is not a plain word, or is a built-in method's
    """
    name, sep, rest = text.partition('=')
    name = name.strip()
    if not sep or not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.+-]*', name):
        raise ValueError(f'expected NAME=\'run.py args\' with a plain name, got {text!r}')
    if name in BUILTIN_METHODS:
        raise ValueError(f'{name!r} is a built-in method; choose another variant name')
    return name, shlex.split(rest)


def unknown_options(args: Sequence[str], repo: Optional[Path] = None) -> List[str]:
    """Options in ``args`` that ``run.py --help`` does not list (empty: all known)

    Args:
        args: run.py arguments
        repo: Checkout whose run.py is asked (default: this one)
    """
    options = {a.split('=', 1)[0] for a in args if a.startswith('--')}
    if not options:
        return []
    env = common.app_env(repo)
    help_text = subprocess.run([sys.executable, str(Path(repo or common.REPO) / 'run.py'), '--help'], env=env,
                               capture_output=True, text=True, timeout=300, cwd=repo or common.REPO).stdout
    known = set(re.findall(r'--[A-Za-z0-9][A-Za-z0-9-]*', help_text))
    return sorted(options - known)


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
    curve = np.asarray(curve, dtype=float)
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


def failure_rate(runs: Sequence[dict]) -> float:
    """Failed QC evaluations / QC evaluations, pooled over runs (NaN if no evaluation)"""
    n = sum(len(r['values']) for r in runs)
    return sum(r['n_failed'] for r in runs) / n if n else float('nan')


def _record(values: Sequence[float], smiles: Sequence[Optional[str]], **extra) -> dict:
    values = np.asarray(values, dtype=float)
    return {'values': values.tolist(), 'smiles_evaluated': list(smiles), 'n_evaluations': len(values),
            'n_failed': int(np.isnan(values).sum()), **extra}


def run_random(table: pd.DataFrame, objective: str, budget: int, seed: int) -> dict:
    """Random sampling of the QM9 sample, valued with its GFN2 single points (no QC run, no failures)

    Args:
        table: Output of :func:`common.qm9_gfn2_sample`
        objective: Column of the objective
        budget: Molecules drawn
        seed: Seed of the draw
    """
    rng = np.random.default_rng(seed)
    chosen = table.iloc[rng.choice(len(table), size=budget, replace=False)]
    return _record(chosen[objective].to_numpy(dtype=float), chosen['smiles'].tolist(), wall_time=0.)


def steered_values(run_dir: Path, budget: int) -> Tuple[np.ndarray, List[Optional[str]]]:
    """Objective of each QC evaluation of a run (NaN for failures), in evaluation order, up to the budget"""
    records = [r for r in common.molecule_records(run_dir) if r.get('evaluation') is not None]
    records = [r for r in records if r['evaluation'] <= budget]
    values = np.array([r['objective'] if r.get('success') and r.get('objective') is not None else np.nan
                       for r in records], dtype=float)
    return values, [r.get('smiles') for r in records]


def run_steered(out: Path, objective: str, initial: int, search: int, seed: int, args: Sequence[str],
                timeout: float, repo: Optional[Path] = None) -> dict:
    """One ``run.py`` campaign (the steered search, or a variant with extra ``args``)

    Args:
        out: Directory for the run (``--out-dir``) and its log
        objective: ``--objective``
        initial: ``--initial-count``
        search: ``--search-size``
        seed: ``--seed``
        args: Extra run.py arguments
        timeout: Seconds allowed
        repo: Checkout whose run.py to use (default: this one)
    Returns:
        The record, with ``run_dir`` and ``initial_smiles`` (the run's initial population)
    """
    t0 = time.perf_counter()
    run_dir = common.run_app(out, ['--initial-count', str(initial), '--search-size', str(search), '--seed', str(seed),
                                   '--objective', objective, *args], out / 'run.log', timeout=timeout, repo=repo)
    values, smiles = steered_values(run_dir, initial + search)
    return _record(values, smiles, run_dir=str(run_dir), wall_time=time.perf_counter() - t0,
                   initial_smiles=json.loads((run_dir / 'initial_molecules.json').read_text()))


def run_graph_ga(out: Path, objective: str, initial: Sequence[str], budget: int, seed: int,
                 ga_args: Sequence[str] = (), timeout: float = 3600, repo: Optional[Path] = None) -> dict:
    """One Graph GA campaign (``bench/graph_ga.py`` in a subprocess with a fixed hash seed)

    Args:
        out: Directory for its JSON and log
        objective: Objective to minimise
        initial: Initial population (the steered run's)
        budget: QC evaluations, initial molecules included
        seed: Seed of the GA
        ga_args: Extra ``graph_ga.py`` arguments (``--offspring``, ``--population``, ``--frac-mutate``)
        timeout: Seconds allowed
        repo: Checkout whose moldesign (QC task, search-space rules) to use (default: this one)
    Returns:
        The record, with ``n_invalid`` (distinct proposals outside the search space), ``generations``,
        ``stopped`` and ``config``
    Raises:
        RuntimeError: if the GA fails
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / 'initial_molecules.json').write_text(json.dumps(list(initial)))
    env = dict(common.app_env(repo), PYTHONHASHSEED=GA_HASH_SEED)
    cmd = [sys.executable, str(GA_SCRIPT), '--objective', objective, '--seed', str(seed), '--budget', str(budget),
           '--initial-json', str(out / 'initial_molecules.json'), '--out', str(out / 'graph_ga.json'), *ga_args]
    t0 = time.perf_counter()
    with (out / 'graph_ga.log').open('w') as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, cwd=common.REPO)
    if proc.returncode != 0:
        tail = ' | '.join((out / 'graph_ga.log').read_text().strip().splitlines()[-3:])
        raise RuntimeError(f'graph_ga.py exited with {proc.returncode}: {tail}')
    result = json.loads((out / 'graph_ga.json').read_text())
    evaluations = result['evaluations']
    values = [np.nan if e['objective'] is None else e['objective'] for e in evaluations]
    return _record(values, [e['smiles'] for e in evaluations], wall_time=time.perf_counter() - t0,
                   n_invalid=len(result['invalid']), generations=result['generations'], stopped=result['stopped'],
                   config=result['config'], initial_smiles=result['initial'])
