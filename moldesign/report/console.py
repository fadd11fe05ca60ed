"""What a campaign logs where: everything to ``runtime.log``, little to the console.

- ``runtime.log`` gets every INFO line of the application, Colmena and Parsl (Colmena's per-task lines only
  with ``debug``: at hundreds of tasks per second they would be most of the file). When it cannot be written
  (disk full), :class:`RunLogHandler` stops writing and reports it once, instead of Python's
  ``--- Logging error ---`` traceback for every line.
- The console gets the application's warnings and errors, one line each (tracebacks only with ``debug``), and
  other packages' critical lines; off a terminal also the application's INFO lines (the periodic progress lines
  among them). On a terminal the live panel (:mod:`moldesign.report.progress`) replaces those.
- Processes forked inside :func:`children_off_console` (the task server, unless ``debug`` off a terminal) write
  their log lines and Python's own error output (an uncaught exception's traceback) to ``runtime.log``: nothing
  but this process writes between the lines of the live panel, and the main process reports their failures in
  one line.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

logger = logging.getLogger(__name__)

_LOG_FORMAT = '%(asctime)s - %(name)s - %(levelname)s - %(message)s'


class OneLineFormatter(logging.Formatter):
    """A console formatter that leaves out tracebacks (they are in runtime.log)"""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class RunLogHandler(logging.FileHandler):
    """The handler of ``runtime.log``: at its first failed write it stops writing and reports the failure once

    Python's handlers print a ``--- Logging error ---`` block with a traceback for each record they cannot write:
    on a full disk, one per log line, from every thread. This one calls ``on_failure`` with the ``OSError`` once
    (only in the process that created it: a forked child such as the task server just stops writing) and drops
    the records that follow. Errors other than ``OSError`` (a bad format string) are reported as usual.

    Args:
        filename: The log file (appended to)
        on_failure: Called once with the error of the first failed write
    """

    def __init__(self, filename: Path, on_failure: Optional[Callable[[OSError], None]] = None):
        super().__init__(filename)
        self.on_failure = on_failure
        self.failed = False
        self._owner = os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        self._failed(error)

    def _failed(self, error: OSError) -> None:
        if self.failed:
            return
        self.failed = True
        if self.on_failure is not None and os.getpid() == self._owner:
            self.on_failure(error)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as error:  # When closing: lines buffered since the first failure cannot be written either
            self._failed(error)

    def close(self) -> None:
        try:
            super().close()
        except OSError as error:
            self._failed(error)


def console_filter(show_info: bool) -> Callable[[logging.LogRecord], bool]:
    """What the console shows: the application's warnings and errors (and INFO lines if ``show_info``); of other
    packages (Parsl, Colmena, ...) only critical lines: the application reports their failures in its own words"""
    def _filter(record: logging.LogRecord) -> bool:
        if not record.name.startswith('moldesign'):
            return record.levelno >= logging.CRITICAL
        return record.levelno >= logging.WARNING or show_info
    return _filter


def setup_logging(run_dir: Path, terminal: bool, quiet: bool, debug: bool = False,
                  on_log_failure: Optional[Callable[[OSError], None]] = None) -> Callable[[], None]:
    """Send log records to ``runtime.log`` and the console

    Args:
        run_dir: Run directory (``runtime.log`` is appended to)
        terminal: Whether the console is a terminal with the live panel (then INFO lines stay off it)
        quiet: No progress on the console (INFO lines stay off it)
        debug: Tracebacks on the console, Colmena's per-task lines in the file
        on_log_failure: Called once if ``runtime.log`` cannot be written (e.g. the disk is full)
    Returns:
        A function that removes the handlers again (for campaigns run from Python, one after the other)
    """
    root = logging.getLogger()
    file_handler = RunLogHandler(Path(run_dir) / 'runtime.log', on_failure=on_log_failure)
    file_handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s', '%H:%M:%S') if debug
                         else OneLineFormatter('%(asctime)s %(levelname)s %(message)s', '%H:%M:%S'))
    console.addFilter(console_filter(show_info=not terminal and not quiet))
    previous_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(file_handler)
    root.addHandler(console)
    levels: List[Tuple[logging.Logger, int]] = []
    for name, level in (('parsl', logging.INFO), ('colmena', logging.INFO if debug else logging.WARNING),
                        ('proxystore', logging.WARNING)):
        named = logging.getLogger(name)
        levels.append((named, named.level))
        named.setLevel(level)

    def teardown() -> None:
        for handler in (file_handler, console):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)
        for named, level in levels:
            named.setLevel(level)

    return teardown


@contextlib.contextmanager
def children_off_console(run_dir: Path) -> Iterator[None]:
    """Processes forked inside this block log to ``runtime.log`` only (not to the console handlers of the root
    logger) and write ``sys.stderr`` (tracebacks, warnings) to ``runtime.log`` too; this process is unchanged
    after the block

    Args:
        run_dir: Run directory (``runtime.log`` is appended to)
    """
    root = logging.getLogger()
    consoles = [h for h in root.handlers if type(h) is logging.StreamHandler]  # File handlers are a subclass
    saved_stderr = sys.stderr
    with open(Path(run_dir) / 'runtime.log', 'a', buffering=1) as log:
        for handler in consoles:
            root.removeHandler(handler)
        sys.stderr = log
        try:
            yield
        finally:
            sys.stderr = saved_stderr
            for handler in consoles:
                root.addHandler(handler)
