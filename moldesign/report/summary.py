"""The end of a campaign: ``summary.json``, and what is printed for the person who ran it.

The console gets the table of the best molecules, the QC utilization, the report's path and the run directory:
the few lines a person needs (everything else is in ``runtime.log``).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from moldesign.report.data import qc_utilization
from moldesign.report.report import format_top_table, rank_agreement, top_molecules, write_report
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
        The summary, with the best molecules (``top``)
    """
    run = load_run(run_dir)
    utilization = qc_utilization([r for r in run.simulation if r.get('smiles')], params.qc_workers)
    db = thinker.db
    summary = {
        'objective': params.objective, 'evaluated_steered': db.n_steered, 'evaluated_total': db.n_evaluations,
        'failed': db.n_failed, 'verified': db.n_verified, 'search_size': params.search_size,
        'batches': thinker.batches_done, 'reranks': thinker.reranks, 'queue_ran_dry': thinker.queue_ran_dry,
        'qc_utilization': None if math.isnan(utilization) else utilization, 'wall_time': wall_time,
        'complete': db.n_steered >= params.search_size and not errors and not interrupted,
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


def print_summary(run_dir: Path, summary: Dict[str, Any], report: bool = True) -> None:
    """Print the best molecules, the utilization, and (optionally after writing it) the report's path"""
    print(f'\nBest molecules ({summary["objective"]}, kcal/mol) after {summary["evaluated_total"]} QC evaluations:')
    print(format_top_table(summary['top']))
    answer = summary.get('answer')
    if answer and answer.get('verified') is not None:
        agreement = summary.get('rank_agreement')
        print(f'Answer: {answer["smiles"]}, {answer["verified"]:.2f} at {answer["verify_qc"]} '
              f'({answer["objective"]:.2f} at {answer["qc"]}); rank agreement of the two levels over the verified '
              f'molecules: {"n/a (fewer than 3)" if agreement is None else f"{agreement:.2f}"}')
    elif answer:
        print(f'Answer: {answer["smiles"]}, {answer["objective"]:.2f} at {answer["qc"]} (not verified at a higher '
              'level: --verify-qc)')
    utilization = summary.get('qc_utilization')
    util_text = f'{utilization:.3f}' if utilization is not None else 'n/a'
    print(f'QC worker utilization (steered phase): {util_text}; wall time {summary["wall_time"]:.1f} s')
    if report:
        try:
            print(f'Report: {write_report(run_dir)}')
        except Exception as exc:  # The records are safe; a plotting problem must not hide them
            logger.exception(f'Could not write the report: {exc}')
    print(f'Run directory: {run_dir}')
