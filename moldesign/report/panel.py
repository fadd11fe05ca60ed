"""The live panel a person sees on a terminal: what the campaign is doing, how far it is, how long it has left.

:func:`describe` turns a :class:`~moldesign.report.progress.ProgressState` into words ("initial population 6/16"),
:class:`TimeLeft` estimates the time left from how fast molecules have been computed so far, and
:func:`render_panel` builds the ``rich`` renderable that :class:`~moldesign.report.progress.ProgressReporter`
keeps on screen.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Optional, Tuple

if TYPE_CHECKING:
    from moldesign.report.progress import ProgressState

logger = logging.getLogger(__name__)

FINAL_PHASES = {'complete': 'complete', 'interrupted': 'interrupted', 'failed': 'ended with an error'}
"""Outcomes the campaign gives the panel when it stops, and how the panel says them"""

_STEERED_PHASES = ('steered', 'stopping', 'done', 'finishing', *FINAL_PHASES)
"""Phases whose progress bar counts steered molecules"""


def objective_unit(objective: str) -> str:
    """Unit of an objective's values"""
    return 'kcal/mol per atom' if objective.endswith('per_atom') else 'kcal/mol'


def format_duration(seconds: float) -> str:
    """A duration for people: '8 s', '1 min 05 s', '2 h 03 min'"""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f'{seconds} s'
    if seconds < 3600:
        return f'{seconds // 60} min {seconds % 60:02d} s'
    return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'


def bar_counts(state: 'ProgressState') -> Tuple[int, int]:
    """What the progress bar shows: (done, total) of the phase; steered molecules once steering started"""
    if state.phase in _STEERED_PHASES:
        return state.evaluated, state.target
    return state.done, state.total


def molecules_left(state: 'ProgressState') -> Optional[int]:
    """QC molecules the search still has to compute (None when the phase is not counted in molecules)"""
    if state.phase == 'initial':
        return max(0, state.total - state.done) + max(0, state.target - state.evaluated)
    if state.phase == 'steered':
        return max(0, state.target - state.evaluated)
    return None


def describe(state: Optional['ProgressState']) -> str:
    """What the campaign is doing, in a few words

    Args:
        state: Latest progress state (None before the thinker reported anything)
    Returns:
        e.g. "computing reference energies 3/5", "initial population 6/16", "steered search 12/32",
        "stopping: waiting for 2 QC tasks in flight"
    """
    if state is None:
        return 'starting the QC and ML workers'
    done, total, phase = state.done, state.total, state.phase
    if phase == 'reference':
        return f'computing reference energies {done}/{total}' + (' (starting the workers)' if not done else '')
    if phase == 'initial':
        return f'initial population {done}/{total}'
    if phase == 'steered':
        text = f'steered search {state.evaluated}/{state.target}'
        if state.evaluated < state.target and not state.in_flight and not state.queue_depth:
            text += ', waiting for candidates (model, MolDQN)'
        return text
    if phase == 'verify':
        return f'verifying the best molecules {done}/{total}'
    if phase == 'stopping':
        tasks = 'task' if state.in_flight == 1 else 'tasks'
        return f'stopping: waiting for {state.in_flight} QC {tasks} in flight'
    if phase == 'done':
        return f'search over: {state.evaluated}/{state.target} steered'
    if phase == 'finishing':
        return 'finishing: stopping the workers, writing the summary and report'
    if phase in FINAL_PHASES:
        return f'{FINAL_PHASES[phase]}: {state.evaluated}/{state.target} steered'
    return phase


class TimeLeft:
    """Estimate the time left from the rate at which molecules have been computed since the first was counted

    The rate is averaged over the whole search so far (pauses included, e.g. waiting for the first candidates), so
    the estimate is steady and grows while nothing arrives.
    """

    def __init__(self):
        self._first: Optional[Tuple[float, int]] = None  # (time, molecules left) when first seen
        self._last: Optional[Tuple[float, int]] = None

    def observe(self, now: float, state: 'ProgressState') -> None:
        """Record a state (call on every update)"""
        left = molecules_left(state)
        if left is None:
            return
        if self._first is None or left > self._first[1]:  # First count, or a larger budget
            self._first = (now, left)
        self._last = (now, left)

    def seconds(self, now: float, state: Optional['ProgressState']) -> Optional[float]:
        """Seconds left, None while there is no estimate (fewer than two molecules computed, or another phase)"""
        if state is None or self._first is None or self._last is None or molecules_left(state) is None:
            return None
        (t0, left0), (_, left) = self._first, self._last
        done = left0 - left
        if left == 0:
            return 0.
        if done < 2 or now <= t0:
            return None
        return left * (now - t0) / done


def render_panel(state: Optional['ProgressState'], title: str, elapsed: float, left: Optional[float]):
    """The panel: phase with bar, time, best molecules, QC and ML counts

    Args:
        state: Latest progress state (None: starting)
        title: Panel title (e.g. the run directory's name)
        elapsed: Seconds since the reporter started
        left: Estimated seconds left (None: no estimate yet)
    Returns:
        A ``rich`` renderable
    """
    from rich.console import Group
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style='bold', no_wrap=True)
    grid.add_column(no_wrap=True, overflow='ellipsis')
    bar = Table.grid(padding=(0, 1))
    bar.add_column(no_wrap=True)
    bar.add_column(no_wrap=True)
    if state is None:
        bar.add_row(ProgressBar(total=None, width=30, pulse=True), '')
    else:
        done, total = bar_counts(state)
        fraction = min(done, total) / total if total else 1.
        bar.add_row(ProgressBar(total=max(total, 1), completed=min(done, total) if total else 1, width=30),
                    f'{100 * fraction:3.0f}%')
    grid.add_row('progress', bar)
    if state is None or state.phase not in FINAL_PHASES:  # At the end the summary gives the wall time
        timing = f'{format_duration(elapsed)} elapsed'
        if state is not None and state.phase in ('initial', 'steered'):
            timing += ', ' + ('estimating the time left' if left is None else f'about {format_duration(left)} left')
        grid.add_row('time', timing)
    if state is not None:
        unit = objective_unit(state.objective)
        best = 'none yet' if state.best_smiles is None or state.best_value is None else \
            f'{state.best_smiles}  {state.best_value:.1f} {unit}'
        grid.add_row('best so far', best)
        if state.verified_smiles is not None and state.verified_value is not None:
            grid.add_row('best verified', f'{state.verified_smiles}  {state.verified_value:.1f} {unit}')
        utilization = 'n/a' if state.utilization is None or not math.isfinite(state.utilization) else \
            f'{state.utilization:.2f}'
        grid.add_row('QC', f'{state.in_flight} in flight, {state.queue_depth} queued, {state.failed} failed, '
                           f'utilization {utilization}')
        grid.add_row('ML', f'{state.batches} screening batch{"" if state.batches == 1 else "es"}')
    heading = Text(describe(state), style='bold cyan', no_wrap=True, overflow='ellipsis')
    return Panel(Group(heading, grid), title=f'[bold]{title}', title_align='left', expand=False)
