"""The end of a campaign: ``summary.json``, and what is printed for the person who ran it.

The console gets the table of the best molecules (narrow enough for an 80-column terminal), the QC utilization,
the report's path and the run directory: the few lines a person needs (everything else is in ``runtime.log``).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from moldesign.report.data import qc_utilization
from moldesign.report.report import rank_agreement, top_molecules, write_report
from moldesign.store import SUMMARY, dump_json, load_run

logger = logging.getLogger(__name__)


def write_summary(run_dir: Path, thinker: Any, params: Any, wall_time: float, interrupted: Optional[str],
                  errors: List[str]) -> Dict[str, Any]:
    """Write ``summary.json`` of a campaign that has ended

    Args:
        run_dir: Run directory
        thinker: The thinker, ended (its counters)
        params: The run's parameters
        wall_time: Seconds the session ran
        interrupted: Name of the signal that stopped it, if any
        errors: Errors that ended it, one line each
    Returns:
        The summary, with the best molecules (``top``, verified ones first) and the run's ``answer`` (the best
        verified molecule with verification, else the best by the search's method)
    """
    run = load_run(run_dir)
    utilization = qc_utilization([r for r in run.simulation if r.get('smiles')], params.qc_workers)
    db = thinker.db
    summary = {
        'objective': params.objective, 'evaluated_steered': db.n_steered, 'evaluated_total': db.n_evaluations,
        'failed': db.n_failed, 'verified': db.n_verified, 'search_size': params.search_size,
        'batches': thinker.batches_done, 'reranks': thinker.reranks, 'queue_ran_dry': thinker.queue_ran_dry,
        'qc_utilization': None if math.isnan(utilization) else utilization, 'wall_time': wall_time,
        'complete': (db.n_steered >= params.search_size or thinker.exhausted) and not errors and not interrupted,
        'exhausted': thinker.exhausted,
        'interrupted': interrupted, 'errors': errors, 'lost_in_flight': thinker.lost_in_flight,
    }
    summary['top'] = top_molecules(run, n=10)
    summary['verify_qc'] = params.verify_qc
    summary['rank_agreement'] = rank_agreement(run)
    answer = summary['top'][0] if summary['top'] else None
    summary['answer'] = None if answer is None else {
        'smiles': answer['smiles'], 'objective': answer['objective'], 'qc': params.qc,
        'verified': answer.get('verified'), 'verify_qc': params.verify_qc if answer.get('verified') is not None
        else None}
    dump_json(summary, Path(run_dir) / SUMMARY)
    return summary


def write_report_safely(run_dir: Path) -> Optional[Path]:
    """Write ``report.md`` and its figures; a problem is logged in one line (the records are safe regardless)

    Returns:
        The report's path, None if it could not be written
    """
    try:
        return write_report(run_dir)
    except Exception as exc:  # A plotting problem must not hide the results
        logger.exception(f'Could not write the report: {type(exc).__name__}: {exc}')
        return None


def _value(value: Optional[float]) -> str:
    return '-' if value is None or not math.isfinite(value) else f'{value:.1f}'


def format_console_table(rows: List[Dict[str, Any]], objective: str) -> str:
    """The best molecules as a table narrow enough for an 80-column terminal

    Args:
        rows: Rows of :func:`~moldesign.report.report.top_molecules`
        objective: Name of the objective
    Returns:
        Header, rule and one line per molecule: rank, SMILES, (with verification: the verified value and whether
        the two levels agree on its rank), the objective value, (the total atomization energy for another
        objective), the evaluation at which it was found, its phase, and QM9's own value ("not in QM9")
    """
    if not rows:
        return 'No successful QC evaluation yet.'
    per_atom = objective != 'atomization_energy'
    verify = any(row.get('verified') is not None for row in rows)
    headers = ['rank', 'SMILES'] + (['verified', 'agree'] if verify else []) + \
        ['per atom' if per_atom else 'kcal/mol'] + (['total'] if per_atom else []) + ['eval.', 'phase', 'QM9 value']
    cells = []
    for row in rows:
        qm9 = {True: _value(row.get('qm9_atomization_energy')), False: 'not in QM9', None: '?'}[row.get('in_qm9')]
        checked = row.get('verified') is not None
        agree = ('no' if row.get('disagree') else 'yes') if checked else '-'
        cells.append([str(row['rank']), row['smiles']]
                     + ([_value(row.get('verified')), agree] if verify else [])
                     + [_value(row['objective'])]
                     + ([_value(row.get('atomization_energy'))] if per_atom else [])
                     + [str(row.get('evaluation') or '-'), row.get('phase') or '-', qm9])
    left = {1, len(headers) - 2}  # SMILES and phase
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: List[str]) -> str:
        return '  '.join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return '\n'.join([line(headers), '  '.join('-' * w for w in widths)] + [line(c) for c in cells]).rstrip()


def print_summary(run_dir: Path, summary: Dict[str, Any], report: Optional[Path] = None) -> None:
    """Print the best molecules, the utilization, the report's path (if written) and the run directory

    Args:
        run_dir: Run directory
        summary: Summary of :func:`write_summary`
        report: Path of the report written, None if there is none
    """
    objective = summary['objective']
    what = 'atomization energy per atom' if objective != 'atomization_energy' else 'atomization energy'
    failed = f' ({summary["failed"]} failed)' if summary.get('failed') else ''
    print(f'\nBest molecules by {what} (kcal/mol) after {summary["evaluated_total"]} QC evaluations{failed}:')
    print(format_console_table(summary['top'], objective))
    answer = summary.get('answer')
    if answer and answer.get('verified') is not None:
        agreement = summary.get('rank_agreement')
        print(f'Answer: {answer["smiles"]} {answer["verified"]:.1f} at {answer["verify_qc"]} '
              f'({answer["qc"]}: {answer["objective"]:.1f})')
        print(f'Verified: {summary.get("verified", 0)} molecules; rank agreement of the two levels '
              f'{"n/a (fewer than 3)" if agreement is None else f"{agreement:.2f}"}')
    elif answer:
        print(f'Answer: {answer["smiles"]} {answer["objective"]:.1f} at {answer["qc"]} (not verified: --verify-qc)')
    utilization = summary.get('qc_utilization')
    util_text = f'{utilization:.3f}' if utilization is not None else 'n/a'
    print(f'QC worker utilization (steered phase): {util_text}; wall time {summary["wall_time"]:.1f} s')
    if report is not None:
        print(f'Report: {report}')
    print(f'Run directory: {run_dir}', flush=True)
