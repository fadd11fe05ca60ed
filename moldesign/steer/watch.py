"""Telling the person at the console why nothing happens: worker blocks that never start.

On a cluster the workers run in batch jobs. A job can wait in the queue forever (two ``--exclusive`` jobs on a
one-node partition, a queue that runs one job per user) or die before its workers start (an environment
activation that fails); Parsl then waits silently. :class:`BlockWatch` notices when an executor has returned no
result for a while after the start, and says so on the console with what the scheduler and the job logs know:
the blocks' job ids (from Parsl's log), and whatever the configuration's ``diagnose(run_dir, job_ids)`` reports
(e.g. ``PENDING (Resources)`` from ``squeue``, or the job's own failure line).
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List, Optional

logger = logging.getLogger(__name__)

_LAUNCHED = re.compile(r'\[Scaling executor (\S+)\] Launched block (\S+) with job ID (\S+)')
"""Parsl's debug line for a submitted block (``parsl/*/parsl.log``)"""


def block_jobs(run_dir: Path) -> Dict[str, List[str]]:
    """The batch jobs Parsl submitted for a run, by executor label (from Parsl's own log)

    Args:
        run_dir: The run directory
    Returns:
        Executor label -> job ids, in submission order
    """
    jobs: Dict[str, List[str]] = {}
    for log in sorted(Path(run_dir).glob('parsl/*/parsl.log')):
        try:
            text = log.read_text(errors='replace')
        except OSError:
            continue
        for label, _, job_id in _LAUNCHED.findall(text):
            jobs.setdefault(label, []).append(job_id)
    return jobs


class BlockWatch:
    """Warns when an executor returns no result for ``after`` seconds (and every ``repeat`` seconds after that)

    Args:
        run_dir: The run directory
        config_module: The Parsl configuration's module (its optional ``diagnose(run_dir, job_ids)`` explains)
        first_result: Executor label -> time of its first result (monotonic), None before; read at each check
        after: Seconds without a result before the first warning (0: never warn)
        repeat: Seconds between warnings
    """

    def __init__(self, run_dir: Path, config_module: Optional[ModuleType],
                 first_result: Callable[[], Dict[str, Optional[float]]], after: float, repeat: float = 300.):
        self.run_dir = Path(run_dir)
        self.config_module = config_module
        self.first_result = first_result
        self.after = after
        self.repeat = repeat
        self.start = time.monotonic()
        self._last_warning: Dict[str, float] = {}

    def check(self, now: Optional[float] = None) -> List[str]:
        """Warn about the executors that have returned nothing yet, if it is time

        Returns:
            The warning lines logged
        """
        if not self.after:
            return []
        now = time.monotonic() if now is None else now
        waiting = [label for label, first in self.first_result().items() if first is None]
        due = [label for label in waiting if now - self.start >= self.after
               and now - self._last_warning.get(label, float('-inf')) >= self.repeat]
        if not due:
            return []
        jobs = block_jobs(self.run_dir)
        lines = []
        for label in due:
            self._last_warning[label] = now
            ids = jobs.get(label, [])
            line = (f'No result from the {label} workers after {now - self.start:.0f} s'
                    + (f' (batch job{"s" if len(ids) > 1 else ""} {", ".join(ids)})' if ids else ''))
            lines.append(line + ': ' + '; '.join(self._diagnose(ids) or [f'see {self.run_dir / "parsl"}']))
        for line in lines:
            logger.warning(line)
        return lines

    def _diagnose(self, job_ids: List[str]) -> List[str]:
        diagnose = getattr(self.config_module, 'diagnose', None)
        if diagnose is None:
            return []
        try:
            return list(diagnose(self.run_dir, job_ids))
        except Exception as exc:  # A diagnosis must never end the run
            return [f'(could not ask the scheduler: {type(exc).__name__}: {exc})']
