"""Live progress of a campaign: a ``rich`` display on a terminal, periodic log lines otherwise.

The thinker builds a :class:`ProgressState` whenever something changes and hands it to
:meth:`ProgressReporter.update`, from any thread. On a terminal, a ``rich`` Live panel shows the
latest state; log records of the root logger's console handlers are routed through the same
``rich`` console while it is live, so they print above the panel instead of garbling it.
Elsewhere (a pipe, a file, CI), one INFO line of logger ``moldesign.report.progress`` is written at
most every ``interval`` seconds, plus one when the reporter stops.
"""
from __future__ import annotations

import logging
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, List, Optional, Tuple

logger = logging.getLogger(__name__)


@dataclass
class ProgressState:
    """A snapshot of a campaign's progress"""

    phase: str
    """'reference', 'initial', 'steered', 'stopping' or 'done'"""
    done: int
    """Units of the phase completed (atoms, initial molecules, steered molecules)"""
    total: int
    """Units of the phase"""
    evaluated: int
    """Steered molecules whose QC result was received (failures included)"""
    target: int
    """Steered molecules the campaign will evaluate (search_size)"""
    failed: int
    """QC tasks that failed"""
    in_flight: int
    """QC tasks submitted and not yet received"""
    queue_depth: int
    """Molecules waiting in the priority queue"""
    batches: int
    """Screening batches completed"""
    best_smiles: Optional[str]
    """Best molecule so far"""
    best_value: Optional[float]
    """Objective value of the best molecule so far (kcal/mol)"""
    utilization: Optional[float]
    """QC slot utilization so far (0-1), None if not known yet"""
    objective: str
    """Name of the objective minimised"""
    verified_smiles: Optional[str] = None
    """Best molecule by its verified (higher-level) value"""
    verified_value: Optional[float] = None
    """Its verified objective value"""


def objective_unit(objective: str) -> str:
    """Unit of an objective's values"""
    return 'kcal/mol per atom' if objective.endswith('per_atom') else 'kcal/mol'


def _format_utilization(value: Optional[float]) -> str:
    return 'n/a' if value is None or not math.isfinite(value) else f'{value:.2f}'


def format_state(state: ProgressState) -> str:
    """One-line summary of a progress state, as logged in non-terminal mode

    Args:
        state: Progress state
    Returns:
        e.g. "progress: 12/40 evaluated (1 failed), 2 in flight, queue 17, 3 batches,
        best CCO -512.3 kcal/mol, utilization 0.97, phase steered"
    """
    best = 'none yet' if state.best_smiles is None or state.best_value is None else \
        f'{state.best_smiles} {state.best_value:.1f} {objective_unit(state.objective)}'
    util = _format_utilization(state.utilization)
    return (f'progress: {state.evaluated}/{state.target} evaluated ({state.failed} failed), '
            f'{state.in_flight} in flight, queue {state.queue_depth}, {state.batches} batches, '
            f'best {best}, utilization {util}, phase {state.phase}')


class ProgressReporter:
    """Show the progress of a campaign, live on a terminal or as periodic log lines

    Args:
        enabled: False makes every method a no-op (for --quiet)
        stream: Where the live display goes, and whose ``isatty()`` picks the mode (default: sys.stderr)
        interval: Shortest time between two log lines in non-terminal mode (seconds)
    """

    def __init__(self, enabled: bool = True, stream: Optional[IO[str]] = None, interval: float = 10.0):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._lock = threading.Lock()
        self._state: Optional[ProgressState] = None
        self._last_log: Optional[float] = None
        self._live = None
        self._console = None
        self._swapped: List[Tuple[logging.Handler, logging.Handler]] = []
        self._started = False
        try:
            self.is_terminal = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.is_terminal = False

    # Context manager
    def __enter__(self) -> 'ProgressReporter':
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start showing progress (on a terminal: start the live display)"""
        if not self.enabled or self._started:
            return
        self._started = True
        if self.is_terminal:
            self._start_live()

    def update(self, state: ProgressState) -> None:
        """Record the latest state; thread-safe and cheap

        Args:
            state: Latest progress state
        """
        if not self.enabled:
            return
        line = None
        with self._lock:
            self._state = state
            if not self.is_terminal:
                now = time.monotonic()
                if self._last_log is None or now - self._last_log >= self.interval:
                    self._last_log = now
                    line = format_state(state)
        if line is not None:
            logger.info(line)

    def stop(self) -> None:
        """Stop showing progress: a last log line (non-terminal), or a last refresh of the live display"""
        if not self.enabled:
            return
        with self._lock:
            state, live = self._state, self._live
            self._live = None
            self._started = False
            self._last_log = None
        if live is not None:
            try:
                live.update(self._render(state), refresh=True)
                live.stop()
            finally:
                self._restore_handlers()
        elif state is not None:
            logger.info(format_state(state))

    # Live display
    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=self.stream)
        self._swap_handlers()
        self._live = Live(console=self._console, get_renderable=self._current_renderable,
                          refresh_per_second=4, transient=False,
                          redirect_stdout=True, redirect_stderr=self.stream is sys.stderr)
        self._live.start()

    def _current_renderable(self):
        with self._lock:
            state = self._state
        return self._render(state)

    def _render(self, state: Optional[ProgressState]):
        from rich.table import Table

        table = Table(title='moldesign progress', show_header=False, box=None, title_justify='left')
        table.add_column(style='bold')
        table.add_column()
        if state is None:
            table.add_row('status', 'starting...')
            return table
        done = f'{state.evaluated}/{state.target}'
        if state.target:
            done += f' ({100 * state.evaluated / state.target:.0f}%)'
        table.add_row('phase', state.phase)
        table.add_row('evaluated', f'{done}, {state.failed} failed')
        best = 'none yet' if state.best_smiles is None or state.best_value is None else \
            f'{state.best_smiles}  {state.best_value:.1f} {objective_unit(state.objective)}'
        table.add_row(f'best ({state.objective})', best)
        table.add_row('QC in flight', str(state.in_flight))
        table.add_row('queue depth', str(state.queue_depth))
        table.add_row('generator batches', str(state.batches))
        table.add_row('QC utilization', _format_utilization(state.utilization))
        return table

    def _swap_handlers(self) -> None:
        """Route the root logger's console handlers through the live console, so logs print above it"""
        from rich.logging import RichHandler

        root = logging.getLogger()
        for handler in list(root.handlers):
            if type(handler) is not logging.StreamHandler:  # Leave file handlers (a subclass) alone
                continue
            try:
                on_terminal = handler.stream.isatty()
            except (AttributeError, ValueError):
                on_terminal = False
            if on_terminal:  # Handlers writing to files or pipes are left alone
                replacement = RichHandler(console=self._console, show_path=False, level=handler.level)
                replacement.setFormatter(logging.Formatter('%(name)s: %(message)s'))
                for log_filter in handler.filters:  # What the console shows stays the same
                    replacement.addFilter(log_filter)
                root.removeHandler(handler)
                root.addHandler(replacement)
                self._swapped.append((handler, replacement))

    def _restore_handlers(self) -> None:
        root = logging.getLogger()
        for original, replacement in self._swapped:
            root.removeHandler(replacement)
            root.addHandler(original)
        self._swapped.clear()
