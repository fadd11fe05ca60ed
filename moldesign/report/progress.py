"""Live progress of a campaign: a ``rich`` panel on a terminal, periodic log lines otherwise.

The thinker builds a :class:`ProgressState` whenever something changes and hands it to
:meth:`ProgressReporter.update`, from any thread. On a terminal, a ``rich`` Live panel
(:mod:`moldesign.report.panel`) shows what the campaign is doing, a progress bar, the time left and the best
molecules; log records of the root logger's console handlers are routed through the same ``rich`` console while
it is live, so they print above the panel instead of garbling it. The campaign ends the panel with its outcome
(:meth:`ProgressReporter.stop`), drawn once more in full before anything else is printed.
Elsewhere (a pipe, a file, CI), one INFO line of logger ``moldesign.report.progress`` is written at
most every ``interval`` seconds, plus one when the reporter stops.
"""
from __future__ import annotations

import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import IO, List, Optional, Tuple

from moldesign.report.panel import TimeLeft, objective_unit, render_panel

logger = logging.getLogger(__name__)


@dataclass
class ProgressState:
    """A snapshot of a campaign's progress"""

    phase: str
    """'reference', 'initial', 'steered', 'verify', 'stopping' or 'done' (the thinker); 'finishing', then
    'complete', 'interrupted' or 'failed' (the campaign, once the thinker is done)"""
    done: int
    """Units of the phase completed (atoms, initial molecules, steered molecules, verified molecules)"""
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
    unit = objective_unit(state.objective)
    best = 'none yet' if state.best_smiles is None or state.best_value is None else \
        f'{state.best_smiles} {state.best_value:.1f} {unit}'
    if state.verified_smiles is not None and state.verified_value is not None:
        best += f' (best verified {state.verified_smiles} {state.verified_value:.1f} {unit})'
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
        title: Title of the live panel (e.g. the run directory's name)
    """

    def __init__(self, enabled: bool = True, stream: Optional[IO[str]] = None, interval: float = 10.0,
                 title: str = 'moldesign'):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.title = title
        self._lock = threading.RLock()  # A signal handler may set the phase while this thread holds it
        self._state: Optional[ProgressState] = None
        self._last_log: Optional[float] = None
        self._live = None
        self._console = None
        self._swapped: List[Tuple[logging.Handler, logging.Handler]] = []
        self._started = False
        self._start_time = time.monotonic()
        self._time_left = TimeLeft()
        self._render_failed = False
        try:
            self.is_terminal = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.is_terminal = False

    @property
    def live(self) -> bool:
        """Whether the live panel is on screen"""
        return self._live is not None

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
        self._start_time = time.monotonic()
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
        now = time.monotonic()
        with self._lock:
            self._state = state
            self._time_left.observe(now, state)
            if not self.is_terminal:
                if self._last_log is None or now - self._last_log >= self.interval:
                    self._last_log = now
                    line = format_state(state)
        if line is not None:
            logger.info(line)

    def set_phase(self, phase: str) -> None:
        """Keep the latest counts, say that the campaign is in another phase (e.g. 'finishing')

        Args:
            phase: The phase (see :attr:`ProgressState.phase`)
        """
        with self._lock:
            state = self._state
        if state is not None and self.enabled:
            self.update(replace(state, phase=phase))

    def stop(self, outcome: Optional[str] = None) -> None:
        """Stop showing progress: a last log line (non-terminal), or the live panel drawn once more in full

        Args:
            outcome: How the campaign ended ('complete', 'interrupted', 'failed'), shown as its last phase
        """
        if not self.enabled or not self._started:
            return
        with self._lock:
            if outcome is not None and self._state is not None:
                self._state = replace(self._state, phase=outcome)
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
        """The panel (a rendering problem must not end the run: it is logged once, and the panel says less)"""
        now = time.monotonic()
        try:
            return render_panel(state, self.title, now - self._start_time, self._time_left.seconds(now, state))
        except Exception as exc:
            if not self._render_failed:
                self._render_failed = True
                logger.warning(f'Cannot draw the progress panel: {type(exc).__name__}: {exc}', exc_info=True)
            from rich.text import Text
            return Text(format_state(state) if state is not None else 'starting')

    def _swap_handlers(self) -> None:
        """Route the root logger's console handlers through the live console, so logs print above it"""
        from rich.logging import RichHandler
        from moldesign.report.console import OneLineFormatter

        root = logging.getLogger()
        for handler in list(root.handlers):
            if type(handler) is not logging.StreamHandler:  # Leave file handlers (a subclass) alone
                continue
            try:
                on_terminal = handler.stream.isatty()
            except (AttributeError, ValueError):
                on_terminal = False
            if on_terminal:  # Handlers writing to files or pipes are left alone
                replacement = RichHandler(console=self._console, show_path=False, level=handler.level,
                                          log_time_format='%H:%M:%S')
                # Tracebacks stay off the console unless the handler showed them (--debug)
                one_line = isinstance(handler.formatter, OneLineFormatter)
                replacement.setFormatter(OneLineFormatter('%(message)s') if one_line
                                         else logging.Formatter('%(name)s: %(message)s'))
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
