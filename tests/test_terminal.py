"""What a person sees in a terminal: ``run.py`` under a real pseudo-terminal, its output replayed on a small
terminal emulator (80 x 24, like a default xterm).

Output to a pipe or a file is clean whatever the live panel does, so only a pseudo-terminal shows the problems a
person meets: log lines of Colmena and Parsl between the panel's redraws, half-drawn panels left above the final
table, a table wider than the screen, tracebacks, a hidden cursor after the run.
"""
import fcntl
import io
import json
import logging
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from moldesign.report.console import OneLineFormatter
from moldesign.report.panel import TimeLeft, describe, render_panel
from moldesign.report.progress import ProgressReporter, ProgressState
from moldesign.report.summary import format_console_table, print_summary

ROOT = Path(__file__).resolve().parents[1]
SMALL = ['--initial-count', '4', '--search-size', '6', '--rl-episodes', '2', '--verify-qc', 'pyscf/hf/sto-3g//xtb']
"""A small campaign, verified at a cheap level (the default B3LYP verification takes minutes on a busy machine)"""
ROWS, COLS = 24, 80

_CONTROL = re.compile(r'\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b.'
                      r'|[\r\n\x08\x07]|[^\x1b\r\n\x08\x07]+')


def replay(raw: str, rows: int = ROWS, cols: int = COLS, join_wrapped: bool = False) -> List[str]:
    """What a terminal of ``rows`` x ``cols`` shows after ``raw``: the scrollback and the screen, line by line

    Enough of a VT100 for what ``rich`` and ``print`` write: text with automatic wrapping, carriage return, line
    feed, cursor up/down/column, erase in line and display; colours and cursor visibility are ignored. The cursor
    cannot move above the screen's top line (lines that scrolled away stay as they were written).

    Args:
        raw: Everything written to the terminal
        rows: Lines of the screen
        cols: Columns of the screen
        join_wrapped: Join the lines that wrapped automatically (the lines as written), instead of the screen's
    """
    lines: List[List[str]] = [[]]
    continued = set()  # Lines that continue the one above (automatic wrap)
    row = col = 0
    for match in _CONTROL.finditer(raw):
        text, command = match.group(0), match.group(2)
        top = max(0, len(lines) - rows)
        if command:
            arg = match.group(1)
            n = int(arg) if arg.isdigit() else 1
            if command == 'A':
                row = max(row - n, top)
            elif command == 'B':
                row = min(row + n, len(lines) - 1)
            elif command == 'G':
                col = n - 1
            elif command == 'K':
                if arg in ('', '0'):
                    del lines[row][col:]
                elif arg == '1':
                    lines[row][:col] = [' '] * min(col, len(lines[row]))
                else:
                    lines[row] = []
                    continued.discard(row)
            elif command == 'J' and arg in ('', '0'):
                del lines[row][col:]
                del lines[row + 1:]
                continued = {r for r in continued if r <= row}
        elif text == '\r':
            col = 0
        elif text == '\n':
            row += 1
            if row == len(lines):
                lines.append([])
        elif text == '\x08':
            col = max(0, col - 1)
        elif text.startswith('\x1b') or text == '\x07':
            continue
        else:
            for char in text:
                if col >= cols:  # Automatic wrap
                    row, col = row + 1, 0
                    if row == len(lines):
                        lines.append([])
                    lines[row] = []
                    continued.add(row)
                line = lines[row]
                line.extend(' ' * (col - len(line)))
                if col < len(line):
                    line[col] = char
                else:
                    line.append(char)
                col += 1
    shown: List[str] = []
    for i, line in enumerate(lines):
        text = ''.join(line)
        if join_wrapped and i in continued and shown:
            shown[-1] += text
        else:
            shown.append(text)
    while shown and not shown[-1].strip():  # The cursor's empty line after the last line feed
        shown.pop()
    return [line.rstrip() for line in shown]


def plain(raw: str) -> str:
    """Everything written, without control sequences (what scrolled by, redraws included)"""
    return re.sub(r'\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)', '', raw)


def _terminal_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ('COLUMNS', 'LINES', 'NO_COLOR', 'FORCE_COLOR', 'TTY_COMPATIBLE', 'TTY_INTERACTIVE')}
    env['TERM'] = 'xterm-256color'
    env['PATH'] = str(Path(sys.executable).parent) + os.pathsep + env.get('PATH', '')
    env['PYTHONPATH'] = str(ROOT) + os.pathsep + env.get('PYTHONPATH', '')
    return env


def run_in_terminal(args: List[str], cwd: Path, timeout: float = 600, interrupt_when: Optional[str] = None
                    ) -> Tuple[int, str]:
    """Run ``run.py`` with a pseudo-terminal of ROWS x COLS as its controlling terminal, stdin, stdout and stderr

    Args:
        args: Options of run.py
        cwd: Working directory
        timeout: Seconds before the run is killed (the test then fails)
        interrupt_when: Type Ctrl-C once text matching this regular expression has been written (control
            sequences ignored)
    Returns:
        Exit code and everything written to the terminal
    """
    pid, fd = pty.fork()
    if pid == 0:  # The child: a new session whose controlling terminal is the pty
        try:
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, str(ROOT / 'run.py'), *args], _terminal_env())
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', ROWS, COLS, 0, 0))
    output, interrupted = bytearray(), False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: every process holding the terminal closed it
                    break
                if not data:
                    break
                output += data
            if interrupt_when and not interrupted and re.search(interrupt_when,
                                                                plain(output.decode('utf-8', 'replace'))):
                os.write(fd, b'\x03')  # Ctrl-C, as typed: the terminal signals its foreground process group
                interrupted = True
        else:
            os.killpg(pid, signal.SIGKILL)
            pytest.fail(f'run.py did not end within {timeout:.0f} s; it wrote:\n'
                        + '\n'.join(replay(output.decode('utf-8', 'replace'))[-40:]))
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode('utf-8', 'replace')


def only_run_dir(tmp_path: Path) -> Path:
    runs = list((tmp_path / 'runs').iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def check_clean_screen(raw: str, outcome: str, phases: Tuple[str, ...]) -> List[str]:
    """The checks every run shares; returns the lines the terminal shows at the end (scrollback included)

    Args:
        raw: Everything written to the terminal
        outcome: How the panel's first line starts at the end
        phases: What the panel must have said meanwhile (regular expressions: the panel is redrawn a few times a
            second, so a busy machine may skip a count)
    """
    screen = replay(raw)
    everything = plain(raw)
    shown = '\n'.join(screen)
    # Only the application's own lines: no INFO/DEBUG lines, nothing from Colmena's or Parsl's loggers
    assert not re.search(r'\b(INFO|DEBUG)\b', everything), everything[-3000:]
    assert not re.search(r'\b(colmena|parsl)\.[a-z_]+', everything), everything[-3000:]
    assert 'Traceback' not in everything, everything[-3000:]
    # The panel said what happened, phase by phase
    for phase in phases:
        assert re.search(phase, everything), f'the panel never said {phase!r}:\n{shown}'
    # One panel left on the screen, drawn in full, with the run's outcome
    tops = [i for i, line in enumerate(screen) if line.startswith('╭')]
    bottoms = [i for i, line in enumerate(screen) if line.startswith('╰')]
    assert len(tops) == 1 and len(bottoms) == 1 and tops[0] < bottoms[0], shown
    panel = screen[tops[0]:bottoms[0] + 1]
    assert 'moldesign' in panel[0]
    assert all(line.startswith('│') and line.endswith('│') for line in panel[1:-1]), shown
    assert len({len(line) for line in panel}) == 1, shown  # Every line of the box the same width
    assert panel[1].strip('│ ').startswith(outcome), shown
    assert all(line.startswith(('╭', '│', '╰')) for line in screen[tops[0]:bottoms[0] + 1])
    assert raw.rfind('\x1b[?25h') > raw.rfind('\x1b[?25l'), 'the cursor is left hidden'
    return screen


def check_table(screen: List[str], run_dir: Path) -> List[str]:
    """The table of the best molecules: complete lines (none wrapped), best molecule first; returns what follows"""
    summary = json.loads((run_dir / 'summary.json').read_text())
    start = next(i for i, line in enumerate(screen) if line.startswith('Best molecules by atomization energy'))
    verify = any(row.get('verified') is not None for row in summary['top'])
    assert screen[start + 1].split() == ['rank', 'SMILES'] + (['verified', 'agree'] if verify else []) + \
        ['kcal/mol', 'eval.', 'phase', 'QM9', 'value']
    assert set(screen[start + 2].replace(' ', '')) == {'-'}
    rows = screen[start + 3:start + 3 + len(summary['top'])]
    checked = r' +(-?\d+\.\d|-) +(yes|no|-)' if verify else r'()()'
    row_pattern = re.compile(r'^ *(\d+)  (\S+)' + checked +
                             r' +(-?\d+\.\d) +(\d+)  (initial|steered) +(-?\d+\.\d|not in QM9|\?)$')
    parsed = [row_pattern.match(line) for line in rows]
    assert all(parsed), '\n'.join(screen[start:])
    for match, expected in zip(parsed, summary['top']):
        assert match.group(2) == expected['smiles'] and float(match.group(5)) == round(expected['objective'], 1)
        if expected.get('verified') is not None:
            assert float(match.group(3)) == round(expected['verified'], 1)
    assert all(len(line) <= COLS for line in screen[start:])
    return screen[start + 3 + len(rows):]


@pytest.mark.slow
def test_campaign_in_a_terminal(tmp_path):
    """A small campaign as a person sees it: the run directory, the panel, the table, the report's path"""
    code, raw = run_in_terminal([*SMALL, '--out-dir', str(tmp_path / 'runs')], tmp_path)
    assert code == 0, '\n'.join(replay(raw)[-40:])
    run_dir = only_run_dir(tmp_path)
    screen = check_clean_screen(raw, 'complete: 6/6 steered', (r'computing reference energies \d/5',
                                                               r'initial population \d/4', r'steered search \d/6',
                                                               'elapsed', 'left', 'best so far', 'utilization 0.'))
    check_table(screen, run_dir)  # On the screen: no row wrapped
    lines = replay(raw, join_wrapped=True)  # The lines as written (a long path wraps at 80 columns)
    assert lines[0] == f'Run directory: {run_dir}'
    after = lines[lines.index(next(line for line in lines if line.startswith('Answer: '))):]
    assert after[0].startswith('Answer: ') and after[1].startswith('Verified: ')
    after = after[2:]
    assert after[0].startswith('QC worker utilization (steered phase): ')
    assert after[1:] == [f'Report: {run_dir / "report.md"}', f'Run directory: {run_dir}']
    # Whatever is not the panel, the table and these lines is a warning or an error of the application
    panel_end = next(i for i, line in enumerate(lines) if line.startswith('╰'))
    for line in lines[1:panel_end]:
        if not line.startswith(('╭', '│')):
            assert re.match(r'^(\d\d:\d\d:\d\d | {9})(WARNING|ERROR|CRITICAL| {7}) ', line), line
    # Everything else went to runtime.log
    log = (run_dir / 'runtime.log').read_text()
    assert 'parsl' in log and re.search(r'Batch (\d+: queued|ranked by the thinker)', log)


@pytest.mark.slow
def test_ctrl_c_in_a_terminal(tmp_path):
    """Ctrl-C typed while the initial population is computed: the panel says it stops and ends as 'interrupted',
    then the table and the restart command; the terminal gets its cursor back"""
    code, raw = run_in_terminal([*SMALL, '--out-dir', str(tmp_path / 'runs')], tmp_path,
                                interrupt_when=r'initial population [12]/4')
    assert code == 130, '\n'.join(replay(raw)[-40:])
    run_dir = only_run_dir(tmp_path)
    screen = check_clean_screen(raw, 'interrupted: 0/6 steered', (r'initial population [12]/4', 'finishing: '))
    words = ' '.join(' '.join(screen).split())  # The warning wraps in its column
    assert 'WARNING SIGINT received: stopping after the QC tasks in flight (up to 60 s); press Ctrl-C again to ' \
           'exit at once' in words, '\n'.join(screen)
    check_table(screen, run_dir)
    lines = replay(raw, join_wrapped=True)
    assert lines[-1] == f'Interrupted (SIGINT). Continue with: python run.py --restart {run_dir}', lines[-5:]


def test_usage_error_in_a_terminal(tmp_path):
    """A mistake on the command line: one line naming the option, no traceback, nothing created"""
    code, raw = run_in_terminal(['--qc-keywords', '{not json', '--out-dir', str(tmp_path / 'runs')], tmp_path,
                                timeout=120)
    assert code == 2
    screen = [line for line in plain(raw).splitlines() if line.strip()]  # Lines as written (a long one wraps)
    assert len(screen) == 1 and screen[0].startswith('run.py: error: --qc-keywords: not valid JSON'), screen
    assert not (tmp_path / 'runs').exists()


def test_config_error_in_a_terminal(tmp_path):
    """A configuration that fails when it is built: one line, the traceback only with --debug"""
    config = tmp_path / 'my_cluster.py'
    config.write_text('def make_config(run_dir, qc_workers, ml_workers):\n'
                      '    raise RuntimeError("no allocation named abc123")\n')
    args = [*SMALL, '--config', str(config), '--out-dir', str(tmp_path / 'runs')]
    code, raw = run_in_terminal(args, tmp_path, timeout=120)
    assert code != 0
    screen = [line for line in plain(raw).splitlines() if line.strip()]
    assert len(screen) == 1 and 'no allocation named abc123' in screen[0] and '--debug' in screen[0], screen
    code, raw = run_in_terminal([*args, '--debug'], tmp_path, timeout=120)
    assert code != 0 and 'Traceback' in plain(raw) and 'no allocation named abc123' in plain(raw)


# ---------------------------------------------------------------------- the panel and the table, without a campaign
def _state(**kwargs) -> ProgressState:
    values = dict(phase='steered', done=12, total=32, evaluated=12, target=32, failed=1, in_flight=2, queue_depth=40,
                  batches=3, best_smiles='CCC(C)(C)C(C)(C)C', best_value=-2601.2, utilization=0.97,
                  objective='atomization_energy')
    values.update(kwargs)
    return ProgressState(**values)


@pytest.mark.parametrize('changes, words', [
    (dict(phase='reference', done=0, total=5), 'computing reference energies 0/5 (starting the workers)'),
    (dict(phase='reference', done=3, total=5), 'computing reference energies 3/5'),
    (dict(phase='initial', done=6, total=16, evaluated=0), 'initial population 6/16'),
    (dict(), 'steered search 12/32'),
    (dict(in_flight=0, queue_depth=0), 'steered search 12/32, waiting for candidates (model, MolDQN)'),
    (dict(phase='verify', done=1, total=3), 'verifying the best molecules 1/3'),
    (dict(phase='stopping', in_flight=1), 'stopping: waiting for 1 QC task in flight'),
    (dict(phase='finishing'), 'finishing: stopping the workers, writing the summary and report'),
    (dict(phase='complete', evaluated=32), 'complete: 32/32 steered'),
    (dict(phase='failed'), 'ended with an error: 12/32 steered'),
])
def test_panel_says_what_happens(changes, words):
    assert describe(_state(**changes)) == words


def test_time_left_from_the_rate_so_far():
    estimate = TimeLeft()
    estimate.observe(0., _state(phase='reference', done=2, total=5))  # Not counted in molecules
    estimate.observe(10., _state(phase='initial', done=0, total=4, evaluated=0, target=6))
    estimate.observe(12., _state(phase='initial', done=1, total=4, evaluated=0, target=6))
    assert estimate.seconds(12., _state(phase='initial', done=1, total=4, evaluated=0, target=6)) is None  # 1 done
    state = _state(phase='steered', evaluated=0, target=6)
    estimate.observe(20., state)  # 4 of 10 molecules in 10 s: 6 left take 15 s
    assert estimate.seconds(20., state) == pytest.approx(15.)
    assert estimate.seconds(30., state) == pytest.approx(30.)  # Nothing arrived for 10 s: the estimate grows
    assert estimate.seconds(30., _state(phase='stopping')) is None


def test_panel_shows_the_best_verified_molecule_and_fits_80_columns():
    console_text = io.StringIO()
    from rich.console import Console
    console = Console(file=console_text, width=80, color_system=None)
    console.print(render_panel(_state(verified_smiles='CCCC(C)(C)C(C)C', verified_value=-2450.3), 'moldesign  run',
                               elapsed=83., left=67.))
    lines = console_text.getvalue().splitlines()
    assert len(lines) == 9 and all(len(line) <= 80 for line in lines)
    text = '\n'.join(lines)
    for words in ('steered search 12/32', '38%', '1 min 23 s elapsed, about 1 min 07 s left',
                  'CCC(C)(C)C(C)(C)C  -2601.2 kcal/mol', 'best verified  CCCC(C)(C)C(C)C  -2450.3 kcal/mol',
                  '2 in flight, 40 queued, 1 failed, utilization 0.97', '3 screening batches'):
        assert words in text, text


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_lines_above_the_panel_have_no_traceback():
    """An exception logged while the panel is live: one line on the terminal (the traceback is for runtime.log)"""
    stream = _Terminal()
    root = logging.getLogger()
    console = logging.StreamHandler(stream)
    console.setFormatter(OneLineFormatter('%(message)s'))
    root.addHandler(console)
    try:
        with ProgressReporter(stream=stream) as reporter:
            reporter.update(_state())
            try:
                raise ValueError('the figure could not be drawn')
            except ValueError:
                logging.getLogger('moldesign.test').exception('Could not write the report')
    finally:
        root.removeHandler(console)
    text = plain(stream.getvalue())
    assert 'Could not write the report' in text and 'Traceback' not in text and 'ValueError' not in text


def test_table_fits_an_80_column_terminal():
    smiles = ['CC12CC3(C)CC3(C1)O2', 'CC(C)C1(C)CCCO1', 'O=C1OC(=O)C(=O)O1', 'N#CC#CC#CC#N', 'CC1C2CC3(C)CC13O2',
              'CCC(C)(C)C(C)(C)C', 'CC12CC34CC3C1(C2)O4', 'C1C23CC45CC14OC25C3', 'CCCc1n[nH]nc1N', 'CC(O)C#N']
    rows = [{'rank': i + 1, 'smiles': s, 'objective': -150.5 + i, 'atomization_energy': -2500.25 + i,
             'evaluation': 100 + i, 'phase': 'steered' if i % 2 else 'initial', 'in_qm9': [True, False, None][i % 3],
             'qm9_atomization_energy': -2400.0 if i % 3 == 0 else None} for i, s in enumerate(smiles)]
    for objective in ('atomization_energy', 'atomization_energy_per_atom'):
        lines = format_console_table(rows, objective).splitlines()
        assert len(lines) == 12 and max(len(line) for line in lines) <= 80, '\n'.join(lines)
        assert lines[2].split() == ['1', 'CC12CC3(C)CC3(C1)O2', '-150.5'] + \
            (['-2500.2'] if objective.endswith('per_atom') else []) + ['100', 'initial', '-2400.0']
        assert lines[3].endswith('not in QM9') and lines[4].endswith('?')
    assert format_console_table([], 'atomization_energy') == 'No successful QC evaluation yet.'


def test_final_lines(tmp_path, capsys):
    """The lines after the table: the answer (the best verified molecule with verification), utilization, report, run"""
    top = [{'rank': 1, 'smiles': 'CCCC(C)(C)C(C)C', 'verified': -2450.34, 'disagree': True, 'objective': -2598.0,
            'evaluation': 41, 'phase': 'steered', 'in_qm9': True, 'qm9_atomization_energy': -2436.1},
           {'rank': 2, 'smiles': 'CCC(C)(C)C(C)(C)C', 'objective': -2601.2, 'evaluation': 40, 'phase': 'steered',
            'in_qm9': False}]
    summary = {'objective': 'atomization_energy', 'evaluated_total': 48, 'failed': 3, 'verified': 4,
               'rank_agreement': 0.5, 'qc_utilization': 0.9812, 'wall_time': 52.04, 'top': top,
               'answer': {'smiles': 'CCCC(C)(C)C(C)C', 'objective': -2598.0, 'qc': 'xtb', 'verified': -2450.34,
                          'verify_qc': 'pyscf/hf/sto-3g//xtb'}}
    print_summary(tmp_path, summary, tmp_path / 'report.md')
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        'Best molecules by atomization energy (kcal/mol) after 48 QC evaluations (3 failed):',
        'rank  SMILES             verified  agree  kcal/mol  eval.  phase     QM9 value',
        '----  -----------------  --------  -----  --------  -----  -------  ----------',
        '   1  CCCC(C)(C)C(C)C     -2450.3     no   -2598.0     41  steered     -2436.1',
        '   2  CCC(C)(C)C(C)(C)C         -      -   -2601.2     40  steered  not in QM9',
        'Answer: CCCC(C)(C)C(C)C -2450.3 at pyscf/hf/sto-3g//xtb (xtb: -2598.0)',
        'Verified: 4 molecules; rank agreement of the two levels 0.50',
        'QC worker utilization (steered phase): 0.981; wall time 52.0 s',
        f'Report: {tmp_path / "report.md"}',
        f'Run directory: {tmp_path}']
    assert all(len(line) <= 80 for line in lines[2:8])  # Table and answer fit an 80-column terminal

    summary.update(verified=0, rank_agreement=None, top=top[1:], answer={
        'smiles': 'CCC(C)(C)C(C)(C)C', 'objective': -2601.2, 'qc': 'xtb', 'verified': None, 'verify_qc': None})
    print_summary(tmp_path, summary)
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ['rank', 'SMILES', 'kcal/mol', 'eval.', 'phase', 'QM9', 'value']
    assert 'Answer: CCC(C)(C)C(C)(C)C -2601.2 at xtb (not verified: --verify-qc)' in lines
    assert not any(line.startswith('Report:') for line in lines)
