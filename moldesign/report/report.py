"""The report of a run: best molecules, counts, utilization, model quality, figures, as ``report.md``.

Built from the run directory only (see the shared data contract), so it works for a finished run,
an interrupted one (no ``summary.json``, a truncated last record line) and a run still in progress::

    run = load_run('runs/20250101-120000-abcdef')
    print(format_top_table(top_molecules(run, n=10)))
    write_report(run.run_dir)      # -> runs/.../report.md, figures in runs/.../figures/

The same from the command line: ``python -m moldesign.report RUN_DIR``.
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from moldesign.report.data import (REFERENCE_METHOD, RunData, load_run,
                                   qc_utilization, record_objective, record_phase)
from moldesign.report.progress import objective_unit

logger = logging.getLogger(__name__)

__all__ = ['RunData', 'load_run', 'qc_utilization', 'top_molecules', 'format_top_table', 'model_quality',
           'write_report']

QM9Lookup = Callable[[str], Optional[float]]
"""SMILES -> QM9 atomization energy (kcal/mol), None if the molecule is not in QM9"""


def _default_qm9_lookup() -> Optional[QM9Lookup]:
    """moldesign.qm9.qm9_atomization_energy, if that module is available"""
    try:
        from moldesign.qm9 import qm9_atomization_energy
    except ImportError:
        logger.info('moldesign.qm9 is not available: QM9 values are left out')
        return None
    return qm9_atomization_energy


def _as_run(run: Union[RunData, str, Path]) -> RunData:
    return run if isinstance(run, RunData) else load_run(run)


def top_molecules(run: Union[RunData, str, Path], n: int = 10, qm9_lookup: Union[QM9Lookup, None, bool] = True
                  ) -> List[Dict[str, Any]]:
    """The best distinct molecules of a run, by its objective (lowest first)

    Args:
        run: Run data, or a run directory
        n: Number of molecules
        qm9_lookup: Function SMILES -> QM9 atomization energy (kcal/mol) or None; True (default) for
            ``moldesign.qm9.qm9_atomization_energy`` when available; False/None to skip the look-up
    Returns:
        One dict per molecule, best first, with keys: rank (1-based), smiles, objective_name (the field
        minimised), formula, objective (value of the run's objective, kcal/mol or kcal/mol per atom),
        atomization_energy (kcal/mol), atomization_energy_per_atom (kcal/mol), evaluation (1-based QC
        evaluation at which it was first found), phase, batch, predicted (model prediction, if the model
        selected it), in_qm9 (bool; None if not looked up) and qm9_atomization_energy (QM9's own value,
        kcal/mol; None if not in QM9)
    """
    run = _as_run(run)
    best: Dict[str, Dict[str, Any]] = {}
    for i, record in enumerate(run.molecule_records, 1):
        value = record_objective(record, run.objective)
        smiles = record.get('smiles') or (record.get('value') or {}).get('smiles')
        if value is None or not smiles:
            continue
        result = record.get('value') or {}
        row = {
            'smiles': smiles,
            'objective_name': run.objective,
            'formula': result.get('formula'),
            'objective': value,
            'atomization_energy': result.get('atomization_energy'),
            'atomization_energy_per_atom': result.get('atomization_energy_per_atom'),
            'evaluation': record.get('evaluation') or i,
            'phase': record_phase(record),
            'batch': record.get('batch'),
            'predicted': record.get('predicted'),
        }
        if smiles not in best:
            best[smiles] = row
        elif value < best[smiles]['objective']:  # A repeat that did better: keep its value, not its discovery
            best[smiles].update({k: row[k] for k in ('objective', 'atomization_energy', 'atomization_energy_per_atom')})
    rows = sorted(best.values(), key=lambda r: (r['objective'], r['evaluation']))
    for search_rank, row in enumerate(rows, 1):
        row['search_rank'] = search_rank
    rows = _rank_by_verification(run, rows)[:n]

    lookup = _default_qm9_lookup() if qm9_lookup is True else (qm9_lookup or None)
    for rank, row in enumerate(rows, 1):
        row['rank'] = rank
        row['in_qm9'], row['qm9_atomization_energy'] = None, None
        if lookup is not None:
            try:
                qm9_value = lookup(row['smiles'])
            except Exception as exc:  # The report must not fail on a look-up problem
                logger.warning(f'QM9 look-up failed for {row["smiles"]}: {exc}')
                continue
            row['in_qm9'] = qm9_value is not None
            row['qm9_atomization_energy'] = qm9_value
    return [{'rank': r.pop('rank'), **r} for r in rows]


def verified_values(run: RunData) -> Dict[str, Optional[float]]:
    """The verification of a run's molecules: SMILES -> objective at the verification level (None if it failed)"""
    return {r['smiles']: record_objective(r, run.objective) for r in run.verify_records if r.get('smiles')}


def _rank_by_verification(run: RunData, rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Verified molecules first, by their verified value; then the others by the search's value

    Adds ``verified`` (objective at the verification level; None if not verified or failed), ``verified_rank`` and
    ``disagree`` (the two levels order the verified molecules differently around this one).
    """
    verified = verified_values(run)
    for row in rows:
        row['verified'] = verified.get(row['smiles'])
        row['verified_rank'] = None
        row['disagree'] = False
    done = sorted((r for r in rows if r['verified'] is not None), key=lambda r: r['verified'])
    by_search = sorted(done, key=lambda r: r['search_rank'])
    for rank, row in enumerate(done, 1):
        row['verified_rank'] = rank
        row['disagree'] = by_search.index(row) + 1 != rank
    return done + [r for r in rows if r['verified'] is None]


def rank_agreement(run: Union[RunData, str, Path]) -> Optional[float]:
    """Spearman correlation between the search's and the verification's values of the verified molecules
    (None for fewer than 3)"""
    run = _as_run(run)
    verified = {s: v for s, v in verified_values(run).items() if v is not None}
    search = {r['smiles']: record_objective(r, run.objective) for r in run.molecule_records}
    pairs = [(search[s], v) for s, v in verified.items() if search.get(s) is not None]
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr
    rho = spearmanr([p for p, _ in pairs], [v for _, v in pairs]).statistic
    return None if rho is None or math.isnan(rho) else float(rho)


def _fmt(value: Optional[float], spec: str = '.1f') -> str:
    return '-' if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_top_table(rows: List[Dict[str, Any]], objective: Optional[str] = None, markdown: bool = False) -> str:
    """Table of the best molecules, as plain text (or Markdown)

    Args:
        rows: Rows of :func:`top_molecules`
        objective: Name of the objective, for the header of its column (default: the rows' objective_name,
            else atomization_energy); for another objective, a column of atomization energies is added
        markdown: Write a Markdown table instead of aligned plain text
    Returns:
        The table, one line per molecule under a header
    """
    objective = objective or (rows[0].get('objective_name') if rows else None) or 'atomization_energy'
    extra = objective != 'atomization_energy'
    verify = any(row.get('verified') is not None for row in rows)
    unit = objective_unit(objective)
    headers = ['rank', 'SMILES'] + ([f'verified ({unit})', 'search rank', 'agree'] if verify else []) + \
        [f'{objective} ({unit})'] + (['atomization_energy (kcal/mol)'] if extra else []) + \
        ['found at eval.', 'phase', 'in QM9', 'QM9 atomization_energy (kcal/mol)']
    cells = []
    for row in rows:
        in_qm9 = {True: 'yes', False: 'no', None: '?'}[row.get('in_qm9')]
        checked = row.get('verified') is not None
        cells.append([str(row['rank']), row['smiles']]
                     + ([_fmt(row.get('verified')), str(row.get('search_rank', '-')),
                         ('no' if row.get('disagree') else 'yes') if checked else '-'] if verify else [])
                     + [_fmt(row['objective'])]
                     + ([_fmt(row.get('atomization_energy'))] if extra else [])
                     + [str(row['evaluation']), row.get('phase') or '-', in_qm9,
                        _fmt(row.get('qm9_atomization_energy'))])
    left = {1, len(headers) - 3}  # SMILES and phase read better left-aligned
    if markdown:
        lines = ['| ' + ' | '.join(headers) + ' |',
                 '|' + '|'.join('---' if i in left else '---:' for i in range(len(headers))) + '|']
        lines += ['| ' + ' | '.join(f'`{c}`' if i == 1 else c for i, c in enumerate(row)) + ' |' for row in cells]
        return '\n'.join(lines)
    if not rows:
        return 'No successful QC evaluation yet.'
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def fmt_line(values):
        return '  '.join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return '\n'.join([fmt_line(headers), '  '.join('-' * w for w in widths)] + [fmt_line(c) for c in cells])


def model_quality(run: Union[RunData, str, Path]) -> List[Dict[str, Any]]:
    """How well the model predicted the molecules it selected, per generator batch

    Args:
        run: Run data, or a run directory
    Returns:
        One dict per batch (in batch order): batch, n, mae (kcal/mol), bias (mean predicted - computed),
        spearman (rank correlation; None for fewer than 3 molecules or constant values),
        best_computed (best objective value in the batch)
    """
    run = _as_run(run)
    by_batch: Dict[Any, List[tuple]] = {}
    for record in run.molecule_records:
        predicted, computed = record.get('predicted'), record_objective(record, run.objective)
        if predicted is not None and computed is not None:
            by_batch.setdefault(record.get('batch'), []).append((float(predicted), computed))
    out = []
    for batch in sorted(by_batch, key=lambda b: (b is None, b if b is not None else 0)):
        pairs = by_batch[batch]
        errors = [p - c for p, c in pairs]
        spearman = None
        if len(pairs) >= 3:
            from scipy.stats import spearmanr
            rho = spearmanr([p for p, _ in pairs], [c for _, c in pairs]).statistic
            spearman = None if rho is None or math.isnan(rho) else float(rho)
        out.append({'batch': batch, 'n': len(pairs), 'mae': sum(abs(e) for e in errors) / len(errors),
                    'bias': sum(errors) / len(errors), 'spearman': spearman,
                    'best_computed': min(c for _, c in pairs)})
    return out


def _wall_time(run: RunData) -> Optional[float]:
    for key in ('wall_time', 'walltime', 'runtime', 'elapsed'):
        if run.summary and isinstance(run.summary.get(key), (int, float)):
            return float(run.summary[key])
    times = []
    for record in run.simulation + run.rl + run.screening:
        for key in ('created', 'compute_started', 'compute_ended', 'result_received'):
            value = (record.get('timestamp') or {}).get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                times.append(value)
    return max(times) - min(times) if times else None


def run_counts(run: RunData) -> Dict[str, Any]:
    """Counts of a run's tasks

    Args:
        run: Run data
    Returns:
        evaluated, succeeded, failed (molecules), distinct (distinct molecules computed), per_phase
        ({phase: evaluated}), reference (atom tasks), reference_failed, generator_batches,
        generator_failed, scoring_tasks, scoring_failed, failure_types ({exception first line: count})
    """
    molecules = run.molecule_records
    failed = [r for r in molecules if not r.get('success')]
    references = [r for r in run.simulation if r.get('method') == REFERENCE_METHOD]
    failure_types = Counter()
    for r in failed + [r for r in references + run.rl + run.screening if not r.get('success', True)]:
        exc = ((r.get('failure_info') or {}).get('exception') or 'unknown').strip().splitlines()
        failure_types[(exc[-1] if exc else 'unknown')[:120]] += 1
    return {
        'evaluated': len(molecules),
        'succeeded': len(molecules) - len(failed),
        'failed': len(failed),
        'distinct': len({r.get('smiles') for r in molecules if r.get('success') and r.get('smiles')}),
        'per_phase': dict(Counter(record_phase(r) or '?' for r in molecules)),
        'reference': len(references),
        'reference_failed': sum(not r.get('success') for r in references),
        'generator_batches': len(run.rl),
        'generator_failed': sum(not r.get('success', True) for r in run.rl),
        'scoring_tasks': len(run.screening),
        'scoring_failed': sum(not r.get('success', True) for r in run.screening),
        'failure_types': dict(failure_types.most_common()),
    }


def _steered_utilization(run: RunData) -> Optional[float]:
    if not run.qc_workers:
        return None
    qc_records = [r for r in run.simulation if r.get('smiles')]
    value = qc_utilization(qc_records, run.qc_workers, phase='steered')
    return None if math.isnan(value) else value


def write_report(run_dir: Union[RunData, str, Path], n_top: int = 10, qm9_lookup: Union[QM9Lookup, None, bool] = True
                 ) -> Path:
    """Write ``report.md`` and its figures (``figures/*.png``) into a run directory

    Args:
        run_dir: Run directory (finished or interrupted), or its data from :func:`load_run`
        n_top: Number of molecules in the table and the picture
        qm9_lookup: As for :func:`top_molecules`
    Returns:
        Path of report.md
    Raises:
        FileNotFoundError: if ``run_dir`` is not a directory
    """
    from moldesign.report import plots

    start = time.perf_counter()
    run = _as_run(run_dir)
    run_dir, figures = run.run_dir, run.run_dir / 'figures'
    objective, unit = run.objective, objective_unit(run.objective)
    rows = top_molecules(run, n=n_top, qm9_lookup=qm9_lookup)
    counts = run_counts(run)
    utilization = _steered_utilization(run)
    quality = model_quality(run)

    def figure(title: str, func, *args, **kwargs) -> List[str]:
        try:
            path = func(*args, **kwargs)
        except Exception as exc:  # A broken figure must not cost the rest of the report
            logger.warning(f'Could not draw "{title}": {type(exc).__name__}: {exc}')
            return [f'*{title}: could not be drawn ({type(exc).__name__}: {exc}).*', '']
        if path is None:
            return [f'*{title}: no data in this run.*', '']
        return [f'![{title}]({path.relative_to(run_dir).as_posix()})', '']

    params = run.run_params
    lines = [f'# Molecular design run `{run_dir.name}`', '']
    if not run.finished:
        lines += ['> **No summary.json: this run was interrupted or is still running.** '
                  'The report covers the records written so far.', '']
    if run.skipped_lines:
        lines += ['> Skipped unreadable record lines (truncated?): ' +
                  ', '.join(f'{k}: {v}' for k, v in run.skipped_lines.items()), '']

    lines += ['## Run', '', '| parameter | value |', '|---|---|']
    spec = run.qc_spec or {}
    qc_name = spec.get('name') or params.get('qc') or '?'
    lines.append(f'| QC specification | `{qc_name}` ({spec.get("program", "?")}, {spec.get("method", "?")}'
                 f'{", " + spec["basis"] if spec.get("basis") else ""}) |')
    for key in ('objective', 'search_size', 'initial_count', 'qc_workers', 'seed', 'config', 'queue_policy'):
        if key in params:
            lines.append(f'| {key} | `{params[key]}` |')
    wall = _wall_time(run)
    lines.append(f'| wall time | {_fmt(wall)} s |' if wall is not None else '| wall time | unknown |')
    slots = '' if not run.qc_workers else f' ({run.qc_workers} QC worker{"s" if run.qc_workers > 1 else ""})'
    lines.append(f'| QC utilization, steered phase | {_fmt(utilization, ".2f")}{slots} |')
    lines.append('')
    if run.summary:
        scalars = {k: v for k, v in run.summary.items() if isinstance(v, (str, int, float, bool)) or v is None}
        if scalars:
            lines += ['Summary written by the run (summary.json):', '', '| key | value |', '|---|---|']
            lines += [f'| {k} | {_fmt(v, ".4g") if isinstance(v, float) else v} |' for k, v in scalars.items()]
            lines.append('')
    for spec_name, energies in (run.reference_energies or {}).items():
        if isinstance(energies, dict):
            lines += [f'Reference atom energies with `{spec_name}` (Hartree): ' +
                      ', '.join(f'{k} {v:.6f}' for k, v in energies.items() if isinstance(v, (int, float))), '']

    lines += ['## Counts', '',
              f'- Molecules evaluated: {counts["evaluated"]} ({counts["succeeded"]} succeeded, {counts["failed"]} '
              f'failed; {counts["distinct"]} distinct) -- by phase: '
              + (', '.join(f'{k} {v}' for k, v in counts['per_phase'].items()) or 'none'),
              f'- Reference atoms: {counts["reference"]} ({counts["reference_failed"]} failed)',
              f'- Generator batches: {counts["generator_batches"]} ({counts["generator_failed"]} failed); '
              f'scoring tasks: {counts["scoring_tasks"]} ({counts["scoring_failed"]} failed)', '']
    if counts['failure_types']:
        lines += ['Failures by exception:', ''] + [f'- {n} x `{exc}`' for exc, n in counts['failure_types'].items()]
        lines.append('')

    verify_qc = params.get('verify_qc')
    verified = [r for r in run.verify_records if r.get('smiles')]
    lines += [f'## Best molecules by {objective} ({unit})', '',
              'QM9 values are B3LYP/6-31G(2df,p) atomization energies; they differ from this run\'s QC method, '
              'compare rankings rather than values.', '']
    if verify_qc:
        agreement = rank_agreement(run)
        failed = sum(not r.get('success') for r in verified)
        lines += [f'The best molecules were verified at `{verify_qc}` ({len(verified)} molecules, {failed} failed). '
                  'Verified molecules come first, ranked by their verified value; "search rank" is their rank by the '
                  f'search\'s `{qc_name}` value, "agree" says whether the two levels order them alike. Rank '
                  'agreement (Spearman) of the two levels over the verified molecules: '
                  + ('n/a (fewer than 3)' if agreement is None else f'{agreement:.2f}') + '.', '']
    lines += [
              format_top_table(rows, objective, markdown=True) if rows else '*No successful QC evaluation yet.*', '']
    lines += figure('Best molecules', plots.draw_top_molecules, rows, figures / 'top_molecules.png', objective)

    lines += ['## Search progress', '']
    lines += figure('Best objective so far vs QC evaluations', plots.plot_best_so_far, run,
                    figures / 'best_so_far.png')

    lines += ['## Model quality', '']
    if quality:
        lines += ['| batch | molecules | MAE | bias (pred. - comp.) | Spearman | best computed |',
                  '|---:|---:|---:|---:|---:|---:|']
        lines += [f'| {q["batch"]} | {q["n"]} | {q["mae"]:.1f} | {q["bias"]:+.1f} | '
                  f'{_fmt(q["spearman"], ".2f")} | {q["best_computed"]:.1f} |' for q in quality]
        lines.append('')
    lines += figure('Predicted vs computed objective by generator batch', plots.plot_predictions, run,
                    figures / 'predictions.png')

    lines += ['## Workers', '']
    lines += figure('Per-worker timeline of QC and ML tasks', plots.plot_timeline, run,
                    figures / 'timeline.png', utilization)

    report = run_dir / 'report.md'
    report.write_text('\n'.join(lines))
    logger.info(f'Wrote {report} in {time.perf_counter() - start:.1f} s')
    return report
