"""Results people can read: live progress of a campaign, the table of its best molecules, and a report.

- :mod:`moldesign.report.progress`: :class:`ProgressReporter` (live ``rich`` display or log lines)
- :mod:`moldesign.report.report`: :func:`load_run`, :func:`top_molecules`, :func:`format_top_table`,
  :func:`qc_utilization`, :func:`write_report` (``report.md`` with figures)
- :mod:`moldesign.report.data`: reading run directories and record timings
- :mod:`moldesign.report.plots`: the figures

Command line: ``python -m moldesign.report RUN_DIR``. Nothing here imports TensorFlow; matplotlib and
RDKit drawing are imported only when a report is written.
"""
from moldesign.report.data import RunData, load_run, qc_utilization
from moldesign.report.progress import ProgressReporter, ProgressState

__all__ = ['RunData', 'load_run', 'qc_utilization', 'ProgressReporter', 'ProgressState']
