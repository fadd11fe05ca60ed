"""Stop requests of a campaign: Ctrl-C (SIGINT), SIGTERM (a scheduler) and SIGHUP (a closed terminal).

One :class:`StopSignals` handles the three signals for the whole of :meth:`Campaign.run
<moldesign.steer.campaign.Campaign.run>`, and what a signal does depends on how far the campaign got:

- ``setup`` (logging, run description, Parsl configuration, thinker; no task started): it raises
  :class:`SetupInterrupted` in the main thread, which the campaign turns into exit code 130 and the restart hint;
- ``running`` (task server and thinker started): the first signal asks the thinker to stop (it drains the QC tasks
  in flight); a second one exits at once;
- ``finishing`` (task server stopping, summary): the first signal is noted (the work is done), a second one exits
  at once.

Exiting at once waits (briefly) for a record being written, kills the task server's process tree and ends the
process with code 130: every record on disk is a complete line, and ``--restart`` continues the run.

RDKit swaps the process's SIGINT handler for its own around substructure searches, embeddings and other long
calls (``RDKit::ControlCHandler``), and the thinker's threads make such calls all the time: a SIGINT that arrives
then is taken by RDKit (a search cut short, "Substructure search was interrupted") and never reaches Python, so a
Ctrl-C or ``kill -INT`` could be lost. :func:`relay_sigint`, called by ``run.py`` before anything starts a thread,
blocks SIGINT in every thread and hands each one to the main thread's Python handler from a thread of its own
(:func:`signal.sigwait`, :func:`_thread.interrupt_main`): no C-level handler, RDKit's or Python's, ever runs for it.
"""
from __future__ import annotations

import _thread
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Callable, Dict, Optional

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""The signals that stop a campaign"""
EXIT_INTERRUPTED = 130


def relay_sigint() -> bool:
    """Deliver SIGINT to the main thread's Python handler through a relay thread (see the module docstring)

    Call it in the main thread before any other thread exists (threads started later, by Python or by C
    libraries, inherit the blocked signal; one started earlier could still take a SIGINT). A SIGINT ignored when
    the process started (a background job of a shell) stays ignored until a Python handler is installed.
    Child processes inherit the blocked signal: one that should take SIGINT unblocks it
    (:func:`unblock_sigint`; the task server does).

    Returns:
        Whether the relay was started (not on a platform without :func:`signal.pthread_sigmask`, or off the main
        thread)
    """
    if not hasattr(signal, 'pthread_sigmask') or threading.current_thread() is not threading.main_thread():
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def _relay() -> None:
        while True:
            signal.sigwait({signal.SIGINT})
            _thread.interrupt_main(signal.SIGINT)  # Runs the Python handler in the main thread (none: nothing)

    threading.Thread(target=_relay, name='sigint-relay', daemon=True).start()
    return True


def unblock_sigint() -> None:
    """Undo :func:`relay_sigint`'s block in this thread (in a child process, before it starts its own children)"""
    if hasattr(signal, 'pthread_sigmask'):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class SetupInterrupted(KeyboardInterrupt):
    """A stop signal arrived before any task started"""


class StopSignals:
    """The campaign's handler of SIGINT, SIGTERM and SIGHUP (see the module docstring)

    Args:
        run_dir: The run directory (named in the restart hint)
        shutdown_timeout: Seconds the thinker waits for QC tasks in flight (named in the warning)
        request_stop: Called on the first signal while running
        exit_now: Called on a second signal before the process exits (kill the task server, quiesce the store)
        before_exit: Called on a second signal before the message is written (e.g. end a live display)
    """

    def __init__(self, run_dir: Path, shutdown_timeout: float, request_stop: Callable[[], None],
                 exit_now: Callable[[], None], before_exit: Optional[Callable[[], None]] = None):
        self.run_dir = run_dir
        self.shutdown_timeout = shutdown_timeout
        self.request_stop = request_stop
        self.exit_now = exit_now
        self.before_exit = before_exit
        self.phase = 'setup'
        self.interrupted: Optional[str] = None
        """Name of the first signal that stopped the run (None: not interrupted)"""
        self.count = 0
        self._previous: Dict[int, object] = {}

    def install(self) -> 'StopSignals':
        """Take over the signals (only possible in the main thread; elsewhere nothing happens)"""
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in SIGNALS}
        return self

    def restore(self) -> None:
        """Give the signals back to their previous handlers"""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> 'StopSignals':
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        self.count += 1
        if self.phase == 'setup':
            self.interrupted = self.interrupted or name
            raise SetupInterrupted(name)
        if self.count == 1:
            if self.phase == 'running':
                self.interrupted = name
                logger.warning(f'{name} received: stopping after the QC tasks in flight (up to '
                               f'{self.shutdown_timeout:.0f} s); press Ctrl-C again to exit at once')
                self.request_stop()
            else:
                logger.warning(f'{name} received while the run finishes; press Ctrl-C again to exit at once')
            return
        if self.before_exit is not None:
            try:
                self.before_exit()
            except Exception:  # Exiting matters more than the display
                logger.debug('Could not end the progress display', exc_info=True)
        sys.stderr.write(f'Exiting at once ({name}). Completed results are in {self.run_dir}; continue with: '
                         f'python run.py --restart {self.run_dir}\n')
        sys.stderr.flush()
        try:
            self.exit_now()
        finally:
            os._exit(EXIT_INTERRUPTED)
