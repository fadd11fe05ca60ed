"""Write the report of a run directory and print the table of its best molecules

Usage: ``python -m moldesign.report RUN_DIR [--top N] [--no-qm9]``
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from moldesign.report.report import format_top_table, load_run, top_molecules, write_report

logger = logging.getLogger(__name__)


def main(args: Optional[List[str]] = None) -> int:
    """Entry point

    Args:
        args: Command-line arguments (default: sys.argv[1:])
    Returns:
        Exit code
    """
    parser = argparse.ArgumentParser(prog='python -m moldesign.report', description=__doc__.splitlines()[0])
    parser.add_argument('run_dir', help='Run directory written by run.py (finished or interrupted)')
    parser.add_argument('--top', type=int, default=10, help='Number of best molecules to list and draw')
    parser.add_argument('--no-qm9', action='store_true', help='Do not look the best molecules up in QM9')
    parser.add_argument('--verbose', '-v', action='store_true', help='Log progress of the report')
    opts = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO if opts.verbose else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    if opts.top < 1:
        parser.error('--top must be at least 1')
    qm9 = not opts.no_qm9
    try:
        run = load_run(opts.run_dir)
    except FileNotFoundError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    report = write_report(run, n_top=opts.top, qm9_lookup=qm9)
    print(f'Report: {report}')
    print(f'Best molecules by {run.objective}:')
    print(format_top_table(top_molecules(run, n=opts.top, qm9_lookup=qm9), run.objective))
    return 0


if __name__ == '__main__':
    sys.exit(main())
