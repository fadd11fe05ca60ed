"""Figures of a run: search progress, worker timeline, model quality and pictures of the best molecules.

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg) so
that no pyplot state or interactive back end is involved; molecule pictures with RDKit.
Each function writes one PNG and returns its path, or None when the run holds no data for it.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from moldesign.report.data import (REFERENCE_METHOD, RunData, compute_interval, record_objective,
                                   record_phase, worker_label)
from moldesign.report.progress import objective_unit

logger = logging.getLogger(__name__)

DPI = 120


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches='tight')
    return path


def plot_best_so_far(run: RunData, path: Path) -> Optional[Path]:
    """Best objective value found vs number of QC evaluations, initial population marked

    Args:
        run: Run data
        path: Where to write the PNG
    Returns:
        The path written, None if the run has no successful molecule record
    """
    records = run.molecule_records
    xs, ys, phases, fails = [], [], [], []
    for i, record in enumerate(records, 1):
        x = record.get('evaluation') or i
        value = record_objective(record, run.objective)
        if value is None:
            fails.append(x)
            continue
        xs.append(x)
        ys.append(value)
        phases.append(record_phase(record))
    if not xs:
        return None
    order = np.argsort(xs, kind='stable')
    xs, ys = np.asarray(xs)[order], np.asarray(ys)[order]
    phases = [phases[i] for i in order]
    best = np.minimum.accumulate(ys)

    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    initial = np.array([p == 'initial' for p in phases])
    if initial.any():
        ax.scatter(xs[initial], ys[initial], s=14, color='tab:gray', alpha=0.6, label='initial population')
        end_initial = max(r.get('evaluation') or 0 for r in records if record_phase(r) == 'initial')
        ax.axvspan(0.5, end_initial + 0.5, color='tab:gray', alpha=0.12)
        ax.axvline(end_initial + 0.5, color='tab:gray', ls='--', lw=1, label='end of initial population')
    if (~initial).any():
        ax.scatter(xs[~initial], ys[~initial], s=14, color='tab:blue', alpha=0.6, label='steered by the model')
    ax.step(xs, best, where='post', color='tab:red', lw=2, label='best so far')
    if fails:
        ax.scatter(fails, [0.02] * len(fails), transform=ax.get_xaxis_transform(), marker='|', s=80,
                   color='black', label=f'failed QC ({len(fails)})')
    unit = objective_unit(run.objective)
    ax.set_xlabel('QC evaluations (molecules, in order of completion)')
    ax.set_ylabel(f'{run.objective} ({unit})')
    ax.set_title(f'Best {run.objective} so far: {best[-1]:.1f} {unit} after {len(records)} evaluations')
    ax.legend(loc='best', fontsize='small')
    ax.grid(alpha=0.3)
    return _save(fig, path)


_TASK_STYLES = {
    'qc-initial': ('tab:gray', 'QC, initial population'),
    'qc-steered': ('tab:blue', 'QC, steered'),
    'reference': ('tab:purple', 'QC, reference atom'),
    'generate': ('tab:orange', 'ML: generate molecules (RL)'),
    'score': ('tab:green', 'ML: score molecules'),
}


def _task_kind(record: Dict[str, Any], source: str) -> str:
    if source == 'rl':
        return 'generate'
    if source == 'screening':
        return 'score'
    if record.get('method') == REFERENCE_METHOD or record_phase(record) == 'reference':
        return 'reference'
    return 'qc-initial' if record_phase(record) == 'initial' else 'qc-steered'


def plot_timeline(run: RunData, path: Path, utilization: Optional[float] = None) -> Optional[Path]:
    """Per-worker timeline (Gantt chart) of QC and ML tasks

    Args:
        run: Run data
        path: Where to write the PNG
        utilization: QC utilization to show in the title
    Returns:
        The path written, None if no record has compute times
    """
    tasks = []
    for source in ('simulation', 'rl', 'screening'):
        for record in getattr(run, source):
            interval = compute_interval(record)
            if interval is None:
                continue
            label = worker_label(record) or 'unknown worker'
            tasks.append((label, interval, _task_kind(record, source), bool(record.get('success', True))))
    if not tasks:
        return None
    t0 = min(i[0] for _, i, _, _ in tasks)
    workers = sorted({w for w, _, _, _ in tasks})
    row = {w: i for i, w in enumerate(workers)}

    fig = Figure(figsize=(10, max(3.5, 1.2 + 0.45 * len(workers))))
    ax = fig.add_subplot()
    for kind, (color, _) in _TASK_STYLES.items():
        for success in (True, False):
            bars = {}
            for worker, (start, end), k, ok in tasks:
                if k == kind and ok == success:
                    bars.setdefault(worker, []).append((start - t0, max(end - start, 1e-3)))
            for worker, spans in bars.items():
                ax.broken_barh(spans, (row[worker] - 0.38, 0.76), facecolors=color,
                               edgecolors='red' if not success else color, linewidth=0.5 if success else 1.5,
                               hatch=None if success else '///')
    ax.set_yticks(range(len(workers)))
    ax.set_yticklabels([_short_worker(w) for w in workers], fontsize='small')
    ax.set_ylim(-0.6, len(workers) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel('time since the first task started (s)')
    ax.set_ylabel('worker (host/pool/rank)')
    kinds = {k for _, _, k, _ in tasks}
    handles = [Patch(color=c, label=lbl) for k, (c, lbl) in _TASK_STYLES.items() if k in kinds]
    if any(not ok for _, _, _, ok in tasks):
        handles.append(Patch(facecolor='white', edgecolor='red', hatch='///', label='failed'))
    ax.legend(handles=handles, loc='upper center', bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize='small')
    title = 'Worker timeline of QC and ML tasks'
    if utilization is not None and math.isfinite(utilization):
        title += f' - QC utilization (steered phase) {utilization:.2f}'
    ax.set_title(title)
    ax.grid(axis='x', alpha=0.3)
    return _save(fig, path)


def _short_worker(label: str) -> str:
    host, _, rest = label.partition('/')
    pool, _, rank = rest.partition('/')
    return f'{host}/{pool[:8]}/{rank}' if rest else label


def plot_predictions(run: RunData, path: Path) -> Optional[Path]:
    """Predicted vs computed objective for the molecules the model selected, coloured by generator batch

    Args:
        run: Run data
        path: Where to write the PNG
    Returns:
        The path written, None if no successful record carries a prediction
    """
    points = []
    for record in run.molecule_records:
        predicted, computed = record.get('predicted'), record_objective(record, run.objective)
        if predicted is None or computed is None:
            continue
        points.append((record.get('batch'), float(predicted), record.get('predicted_std'), computed))
    if not points:
        return None
    batches = sorted({b for b, *_ in points}, key=lambda b: (b is None, b if b is not None else 0))
    cmap = _batch_colormap()
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    for i, batch in enumerate(batches):
        sel = [p for p in points if p[0] == batch]
        color = cmap(i / max(1, len(batches) - 1))
        x = np.array([c for *_, c in sel])
        y = np.array([p for _, p, _, _ in sel])
        std = np.array([s if s is not None else 0. for _, _, s, _ in sel], dtype=float)
        mae = float(np.mean(np.abs(y - x)))
        ax.errorbar(x, y, yerr=std if std.any() else None, fmt='o', ms=5, color=color, ecolor=color, alpha=0.8,
                    elinewidth=0.8, label=f'batch {batch if batch is not None else "?"} (n={len(sel)}, MAE {mae:.1f})')
    lo = min(min(p[1], p[3]) for p in points)
    hi = max(max(p[1], p[3]) for p in points)
    pad = 0.05 * (hi - lo or 1.)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color='black', lw=1, ls='--', label='predicted = computed')
    unit = objective_unit(run.objective)
    ax.set_xlabel(f'computed {run.objective} ({unit})')
    ax.set_ylabel(f'predicted {run.objective} ({unit}; bars: model std)')
    ax.set_title('Model predictions for the molecules it selected, by generator batch')
    handles, labels = ax.get_legend_handles_labels()
    if len(batches) > 12:  # Too many batches to list: keep the diagonal and the first and last batches
        keep = [0, 1, len(handles) - 1] if len(handles) > 2 else list(range(len(handles)))
        handles, labels = [handles[i] for i in keep], [labels[i] for i in keep]
        handles.append(Line2D([], [], ls='', label=f'... {len(batches)} batches, colour dark (first) to light (last)'))
        labels.append(handles[-1].get_label())
    ax.legend(handles, labels, fontsize='x-small', loc='best')
    ax.grid(alpha=0.3)
    ax.set_aspect('equal', adjustable='datalim')
    return _save(fig, path)


def _batch_colormap():
    from matplotlib import colormaps
    return colormaps['viridis']


def draw_top_molecules(rows: List[Dict[str, Any]], path: Path, objective: str, per_row: int = 4) -> Optional[Path]:
    """Grid picture of the best molecules, labelled with rank, SMILES and objective value

    Args:
        rows: Rows of :func:`moldesign.report.report.top_molecules`
        path: Where to write the PNG
        objective: Name of the objective (for the labels)
        per_row: Molecules per row of the grid
    Returns:
        The path written, None if there is no molecule
    """
    from rdkit import Chem
    from rdkit.Chem import Draw

    mols, legends = [], []
    for row in rows:
        mol = Chem.MolFromSmiles(row['smiles'])
        if mol is None:
            continue
        mols.append(mol)
        legend = f'{row["rank"]}. {row["smiles"]}\n{row["objective"]:.1f} {objective_unit(objective)}'
        if objective != 'atomization_energy' and row.get('atomization_energy') is not None:
            legend += f'\n(atomization {row["atomization_energy"]:.1f} kcal/mol)'
        legends.append(legend)
    if not mols:
        return None
    width, height, caption = 320, 280, 66
    per_row = min(per_row, len(mols))
    options = Draw.MolDrawOptions()
    options.minFontSize = 14  # Atom labels readable in a 320 px cell
    grid = Draw.MolsToGridImage(mols, molsPerRow=per_row, subImgSize=(width, height), drawOptions=options)
    grid = grid.convert('RGB')

    # RDKit's multi-line legends overlap at readable sizes: write the captions under each cell with PIL
    from PIL import Image, ImageDraw, ImageFont
    n_rows = math.ceil(len(mols) / per_row)
    canvas = Image.new('RGB', (per_row * width, n_rows * (height + caption)), 'white')
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=17)
    for i, legend in enumerate(legends):
        col, row = i % per_row, i // per_row
        cell = grid.crop((col * width, row * height, (col + 1) * width, (row + 1) * height))
        top = row * (height + caption)
        canvas.paste(cell, (col * width, top))
        for j, text in enumerate(legend.splitlines()):
            draw.text((col * width + width / 2, top + height + 2 + 20 * j), text, fill='black', font=font, anchor='ma')
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(str(path), format='PNG')
    return path
