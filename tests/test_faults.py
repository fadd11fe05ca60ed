"""Fault injection against real runs: signals, kills, stopped processes, cut files, full disks, bad input.

The campaigns are driven as a user or a scheduler would: ``run.py`` in a subprocess (real Parsl HTEX workers,
real GFN2-xTB, real MolDQN), and the tests check what they would see: the records on disk (none lost, none cut
or glued, none computed twice: the key is ``(method, SMILES or element)``), the exit code, the console (an error
is one line, never a traceback), and the processes left behind (none: a run's processes carry
``MOLDESIGN_RUN_DIR`` or name the run directory on their command line). Nothing of the system under test is
mocked. Bad input that is refused before any process starts goes through :func:`moldesign.cli.main` in this
process (the same code as ``run.py``, without importing the libraries again for each case).

The campaigns are tiny and shared: each module-scoped scenario fixture injects several faults, one after the
other, into one run directory (its first session and its restarts) and records what happened; the tests assert
on those observations. Mounting a tmpfs (disk full, read-only) needs root; CI runs as root.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

import faultlib as F

logger = logging.getLogger(__name__)

SEARCH = 4
"""Steered molecules of the campaigns that a restart completes"""
GRACE = 10.
"""Seconds between a scheduler's SIGTERM and its SIGKILL (Slurm's KillWait is 30 by default; 10 is a short one)"""
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason='mounting a tmpfs (full or read-only disk) needs root')


@dataclass
class Session:
    """What one run.py process did"""

    returncode: Optional[int] = None
    stdout: str = ''
    stderr: str = ''
    seconds: float = 0.
    records: List[dict] = field(default_factory=list)
    """QC records on disk after it ended"""


def _steered_at_least(run_dir: Path, n: int, timeout: float = 300) -> List[dict]:
    return F.wait_until(lambda: (rs := F.partial_records(run_dir)) and F.steered(rs) >= n and rs, timeout,
                        f'{n} steered QC records in {run_dir}')


def _molecules(records: List[dict]) -> int:
    return sum(bool(r.get('smiles')) for r in records)


def _molecules_at_least(run_dir: Path, n: int, timeout: float = 300) -> List[dict]:
    return F.wait_until(lambda: (rs := F.partial_records(run_dir)) and _molecules(rs) >= n and rs, timeout,
                        f'{n} molecules computed in {run_dir}')


def _suspend_qc_workers(run_dir: Path) -> list:
    workers = F.wait_until(lambda: F.qc_workers(run_dir), 60, 'the QC worker')
    for worker in workers:
        worker.suspend()
    return workers


def _cli(capsys, *argv: str) -> Tuple[int, str]:
    """Run :func:`moldesign.cli.main` in this process (for input refused before anything starts), as run.py would

    Returns:
        Exit code and what it wrote to stderr
    """
    from moldesign.cli import main
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    capsys.readouterr()
    try:
        code = main([*argv, '--quiet'])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    return code, capsys.readouterr().err


# ====================================================================== SIGTERM, SIGHUP, a second signal
@dataclass
class SignalScenario:
    """SIGTERM while a QC task is in flight; then a restart stopped by SIGHUP, then Ctrl-C"""

    run_dir: Path
    copy: Path
    """A copy of the run directory after the SIGTERM session (the damaged-restart tests use it)"""
    first: Session
    in_flight: int
    """QC tasks in flight when the thinker got SIGTERM"""
    term_time: float
    """Wall-clock time of SIGTERM"""
    leftover_seconds: float
    """Seconds from the end of run.py until no process of the run was left"""
    agent_deleted: bool
    restart: Session
    second_signal_seconds: float
    """Seconds from the second signal (Ctrl-C) to the end of the restart"""


@pytest.fixture(scope='module')
def signal_scenario(tmp_path_factory) -> SignalScenario:
    """SIGTERM mid-run with the QC worker stopped (so a result finishes after SIGTERM), then a restart ended by
    SIGHUP and Ctrl-C

    1. run with --shutdown-timeout 120 and a budget that outlasts the first MolDQN call (the thinker's own first
       batches keep QC busy meanwhile, so a small budget could be spent before it); wait for a steered result and a
       MolDQN call (its ~1 MB result must not hold up the QC results);
    2. SIGSTOP the QC worker, SIGTERM run.py, SIGCONT the worker 2 s after the thinker started draining;
    3. copy the run directory (for the damaged-restart tests), delete agent.pkl;
    4. --restart; once it computed a new steered molecule, stop its QC worker, SIGHUP, and when the thinker
       drains, Ctrl-C (a second signal exits at once).
    """
    tmp = tmp_path_factory.mktemp('signals')
    proc = F.start(tmp, '--out-dir', str(tmp / 'runs'), *F.TINY, '--search-size', '200', '--shutdown-timeout', '120')
    run_dir = None
    try:
        run_dir = F.the_run_dir(tmp / 'runs')
        _steered_at_least(run_dir, 1)
        rl_records = run_dir / 'rl_records.jsonld'
        F.wait_until(lambda: rl_records.exists() and rl_records.stat().st_size, 300, 'a MolDQN call')
        workers = _suspend_qc_workers(run_dir)
        term_time = time.time()
        proc.send_signal(signal.SIGTERM)
        line = F.wait_for_log(run_dir, 'Stopping: waiting up to', 60)
        in_flight = int(line.split(' for ')[-1].split()[0])
        time.sleep(2)
        for worker in workers:
            worker.resume()
        resumed = time.monotonic()
        code, out, err = F.finish(proc, 180)
        first = Session(code, out, err, time.monotonic() - resumed, F.simulation(run_dir))
        leftover = F.assert_no_processes_left(run_dir, timeout=30)

        copy = tmp / 'copy'
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns('parsl', '.lock'))
        agent_deleted = (run_dir / 'agent.pkl').exists()
        (run_dir / 'agent.pkl').unlink(missing_ok=True)

        start = time.monotonic()
        proc = F.start(tmp, '--restart', str(run_dir), '--quiet', '--no-report', '--shutdown-timeout', '120')
        _steered_at_least(run_dir, F.steered(first.records) + 1)
        _suspend_qc_workers(run_dir)  # The drain cannot end: only the second signal ends the run
        proc.send_signal(signal.SIGHUP)
        F.wait_for_log(run_dir, 'Stopping: waiting up to', 60, count=2)
        second = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code, out, err = F.finish(proc, 120)
        ended = time.monotonic()
        restart = Session(code, out, err, ended - start, F.simulation(run_dir))
        F.assert_no_processes_left(run_dir, timeout=30)
        return SignalScenario(run_dir, copy, first, in_flight, term_time, leftover, agent_deleted, restart,
                              ended - second)
    finally:
        F.end_run(proc, run_dir)


@pytest.mark.slow
def test_sigterm_drains_in_seconds_and_writes_the_result_finished_after_it(signal_scenario):
    """Not the whole --shutdown-timeout behind the ML pipe: only the QC tasks in flight, then Parsl's shutdown"""
    s = signal_scenario
    assert s.first.returncode == 130, s.first.stderr[-3000:]
    assert 'Traceback' not in s.first.stderr and f'--restart {s.run_dir}' in s.first.stderr
    assert s.in_flight >= 1
    assert s.first.seconds < 30, f'run.py took {s.first.seconds:.0f} s to exit after the QC worker resumed'
    late = [r for r in s.first.records if r['timestamp']['compute_ended'] and
            r['timestamp']['compute_ended'] > s.term_time]
    assert late, 'no QC result finished after SIGTERM was written'
    summary = json.loads((s.copy / 'summary.json').read_text())
    assert summary['interrupted'] == 'SIGTERM' and summary['lost_in_flight'] == []
    F.check_records(s.copy)


@pytest.mark.slow
def test_sigterm_leaves_no_process(signal_scenario):
    assert signal_scenario.leftover_seconds < 30


@pytest.mark.slow
def test_sighup_stops_like_sigterm_and_a_second_signal_exits_at_once(signal_scenario):
    """SIGHUP (terminal closed) drains like SIGTERM; Ctrl-C while it drains exits at once, records whole"""
    s = signal_scenario
    err = s.restart.stderr
    assert s.restart.returncode == 130, err[-3000:]
    assert 'SIGHUP received' in err and 'Exiting at once (SIGINT)' in err, err[-3000:]
    assert 'Traceback' not in err and f'--restart {s.run_dir}' in err
    assert s.second_signal_seconds < 15, f'{s.second_signal_seconds:.0f} s from the second signal to the exit'
    F.check_records(s.run_dir, before=s.first.records)  # Every line whole, nothing lost or computed twice


@pytest.mark.slow
def test_deleted_agent_of_a_run_with_moldqn_calls_warns_and_starts_a_new_one(signal_scenario):
    s = signal_scenario
    assert s.agent_deleted, 'a MolDQN call finished before SIGTERM, so agent.pkl should have existed'
    warnings = [line for line in s.restart.stderr.splitlines() if 'agent.pkl' in line]
    assert len(warnings) == 1 and 'WARNING' in warnings[0] and 'starting a new MolDQN agent' in warnings[0]


# ====================================================================== a scheduler's SIGKILL, stale processes
@dataclass
class KillScenario:
    """One run directory through SIGTERM + SIGKILL, a killed restart with its task server stopped, a cut last line,
    a concurrent restart, a stopped QC worker; the last restart completes the run"""

    run_dir: Path
    killed: bool
    """Whether run.py was still alive at the end of the grace period (it drains a stopped QC worker)"""
    cleanup_seconds: float
    """Seconds from SIGKILL until no process of the run was left"""
    first: List[dict]
    """QC records after the first session"""
    second: Session
    """The restart started while another one ran"""
    holder: int
    """PID of the restart that held the run"""
    stale: List[int]
    """PIDs of the run's processes alive after the SIGKILL of the restart whose task server was stopped"""
    before: List[dict]
    """Complete QC records before the last restart (the cut one excluded)"""
    cut: dict
    """The record whose line was cut"""
    stopped_worker: bool
    last: Session


@pytest.fixture(scope='module')
def kill_scenario(tmp_path_factory) -> KillScenario:
    """A scheduler's end of a job, then stale processes, a cut record, a concurrent restart, a stopped QC worker

    1. run; once it computed molecules, SIGSTOP its QC worker (the drain cannot end), SIGTERM, SIGKILL after
       :data:`GRACE` s: the task server must notice and stop Parsl's processes;
    2. --restart; meanwhile a second --restart of the same directory (refused in one line naming the first);
       once it computed a molecule, SIGSTOP its task server and SIGKILL it: Parsl's processes (and the stopped
       server) stay behind, as after a hung shutdown; cut the last line of simulation_records.jsonld in half;
    3. --restart (it must name the processes still alive and stop them, and move the cut line aside); SIGSTOP
       its QC worker for 3 s, then SIGCONT; it must complete the run.
    """
    tmp = tmp_path_factory.mktemp('kill')
    began = time.monotonic()
    proc = F.start(tmp, '--out-dir', str(tmp / 'runs'), *F.TINY, '--search-size', str(SEARCH))
    run_dir = None
    try:
        run_dir = F.the_run_dir(tmp / 'runs')
        _molecules_at_least(run_dir, 1)
        _suspend_qc_workers(run_dir)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(GRACE)
            killed = False
        except subprocess.TimeoutExpired:
            proc.kill()
            killed = True
        proc.communicate(timeout=30)
        cleanup = F.assert_no_processes_left(run_dir, timeout=30)
        first = F.simulation(run_dir)
        logger.info(f'{time.monotonic() - began:.0f} s: first session killed, {_molecules(first)} molecules')

        proc = F.start(tmp, '--restart', str(run_dir), '--quiet', '--no-report')
        F.wait_until(lambda: f'process {proc.pid} ' in (run_dir / '.lock').read_text(), 120, 'the restart to lock')
        concurrent = F.start(tmp, '--restart', str(run_dir), '--quiet')  # While the first one starts Parsl
        holder = proc.pid
        _molecules_at_least(run_dir, _molecules(first) + 1)
        second = Session(*F.finish(concurrent, 120))  # Refused before the restart holding the run is killed
        logger.info(f'{time.monotonic() - began:.0f} s: the restart computed a molecule, a second one was refused')
        F.wait_until(lambda: F.task_server(proc), 10, 'the task server').suspend()
        proc.kill()
        proc.wait(30)
        stale = [p.pid for p in F.processes_of(run_dir)]

        path = run_dir / 'simulation_records.jsonld'
        lines = path.read_bytes().splitlines(keepends=True)
        cut = json.loads(lines[-1])
        path.write_bytes(b''.join(lines[:-1]) + lines[-1][:len(lines[-1]) // 2])
        before = [json.loads(line) for line in lines[:-1]]
        logger.info(f'{time.monotonic() - began:.0f} s: restart killed, {len(stale)} processes left, last line cut')

        start = time.monotonic()
        proc = F.start(tmp, '--restart', str(run_dir), '--quiet', '--no-report')
        _molecules_at_least(run_dir, _molecules(before) + 1)  # The stale processes are gone by now
        workers = _suspend_qc_workers(run_dir)
        time.sleep(3)
        for worker in workers:
            worker.resume()
        logger.info(f'{time.monotonic() - began:.0f} s: QC worker stopped for 3 s')
        code, out, err = F.finish(proc, 300)
        logger.info(f'{time.monotonic() - began:.0f} s: last restart ended')
        last = Session(code, out, err, time.monotonic() - start, F.simulation(run_dir))
        F.assert_no_processes_left(run_dir, timeout=30)
        return KillScenario(run_dir, killed, cleanup, first, second, holder, stale, before, cut, bool(workers), last)
    finally:
        F.end_run(proc, run_dir)


@pytest.mark.slow
def test_sigterm_then_sigkill_after_a_grace_period_leaves_no_process(kill_scenario):
    """The task server (parent-death signal, child subreaper) stops Parsl's interchanges and worker pools"""
    s = kill_scenario
    assert s.killed, 'run.py exited within the grace period although its QC worker was stopped'
    assert s.cleanup_seconds < 30
    assert _molecules(s.first) >= 1


@pytest.mark.slow
def test_a_second_restart_of_the_same_run_is_refused_naming_the_holder(kill_scenario):
    s = kill_scenario
    assert s.second.returncode == 2
    F.assert_one_line_error(s.second.stderr, '--restart', 'in use', f'process {s.holder}')


@pytest.mark.slow
def test_restart_says_which_processes_were_still_alive_and_stops_them(kill_scenario):
    s = kill_scenario
    assert s.stale, 'the stopped task server should have left processes behind'
    line = [x for x in s.last.stderr.splitlines() if 'still alive' in x]
    assert len(line) == 1 and all(str(pid) in line[0] for pid in s.stale), s.last.stderr[-3000:]


@pytest.mark.slow
def test_cut_last_line_is_moved_aside_and_nothing_is_glued_or_lost(kill_scenario):
    s = kill_scenario
    records = F.check_records(s.run_dir, before=s.before)  # Every line parses: the next record was not glued
    asides = list(s.run_dir.glob('simulation_records.jsonld.partial-*'))
    assert len(asides) == 1 and json.dumps(s.cut).encode()[:10] == asides[0].read_bytes()[:10]
    assert sum(F.key(r) == F.key(s.cut) for r in records) <= 1  # Computed again at most once
    assert 'was cut' in s.last.stderr


@pytest.mark.slow
def test_the_run_completes_after_every_kill_without_loss_or_duplicate(kill_scenario):
    """Also: SIGSTOP then SIGCONT of the QC worker only delays its task"""
    s = kill_scenario
    assert s.stopped_worker
    assert s.last.returncode == 0, s.last.stderr[-3000:]
    records = F.check_records(s.run_dir, before=s.first)
    F.check_records(s.run_dir, before=s.before)
    assert F.steered(records) == SEARCH
    assert json.loads((s.run_dir / 'summary.json').read_text())['complete']


# ====================================================================== signals before the run
@pytest.mark.slow
def test_ctrl_c_while_reference_energies_are_computed(tmp_path):
    proc = F.start(tmp_path, '--out-dir', str(tmp_path / 'runs'), *F.TINY, '--search-size', '4')
    try:
        run_dir = F.the_run_dir(tmp_path / 'runs')
        F.wait_for_log(run_dir, 'Computing reference energies', 120)
        proc.send_signal(signal.SIGINT)
        code, out, err = F.finish(proc, 120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 130, err[-3000:]
    assert 'Traceback' not in err and f'--restart {run_dir}' in err
    assert not F.error_lines(err)
    F.check_records(run_dir)
    F.assert_no_processes_left(run_dir)


@pytest.mark.parametrize('signum,delay', [(signal.SIGINT, 0.3), (signal.SIGTERM, 2.), (signal.SIGHUP, 5.)])
def test_a_signal_in_the_first_seconds(tmp_path, signum, delay):
    """While the libraries load or the run is set up: no traceback, exit 130, no half-made run directory"""
    proc = F.start(tmp_path, '--out-dir', str(tmp_path / 'runs'), *F.TINY, '--search-size', '4')
    time.sleep(delay)
    proc.send_signal(signum)
    code, out, err = F.finish(proc, 120)
    assert code == 130, err[-3000:]
    assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err[-3000:]
    assert 'nterrupted' in err
    for run_dir in (tmp_path / 'runs').glob('*'):  # Either none, or one a restart can continue
        assert (run_dir / 'run_params.json').is_file() and (run_dir / 'initial_molecules.json').is_file()
        assert f'--restart {run_dir}' in err
        F.assert_no_processes_left(run_dir)


# ====================================================================== disk full
@dataclass
class DiskFullScenario:
    """The disk of the run directory fills up mid-run; then space is freed and the run restarted"""

    run_dir: Path
    at_fill: int
    """Complete QC records when the disk was filled"""
    full: Session
    files_after: List[str]
    restart: Session


@pytest.fixture(scope='module')
def disk_full_scenario(tmp_path_factory) -> Iterator[DiskFullScenario]:
    """A 4 MB tmpfs as --out-dir, filled up by another file once the run computed molecules"""
    if not IS_ROOT:
        pytest.skip('mounting a tmpfs needs root')
    tmp = tmp_path_factory.mktemp('diskfull')
    mount = tmp / 'small-disk'
    F.mount_tmpfs(mount, '4m')
    proc = None
    run_dir = None
    try:
        proc = F.start(tmp, '--out-dir', str(mount), *F.TINY, '--search-size', str(SEARCH))
        run_dir = F.the_run_dir(mount)
        at_fill = len(_molecules_at_least(run_dir, 2))
        F.fill_disk(mount)
        start = time.monotonic()
        code, out, err = F.finish(proc, 180)
        full = Session(code, out, err, time.monotonic() - start, F.simulation(run_dir))
        files_after = sorted(os.listdir(run_dir))
        F.assert_no_processes_left(run_dir, timeout=30)

        subprocess.run(['mount', '-o', 'remount,size=64m', str(mount)], check=True)
        (mount / 'filler').unlink()
        start = time.monotonic()
        code, out, err = F.finish(F.start(tmp, '--restart', str(run_dir), '--quiet', '--no-report'), 300)
        restart = Session(code, out, err, time.monotonic() - start, F.simulation(run_dir))
        F.assert_no_processes_left(run_dir, timeout=30)
        yield DiskFullScenario(run_dir, at_fill, full, files_after, restart)
    finally:
        F.end_run(proc, run_dir)
        F.umount(mount)


@pytest.mark.slow
@needs_root
def test_disk_full_stops_the_run_in_one_line_and_keeps_every_record(disk_full_scenario):
    s = disk_full_scenario
    err = s.full.stderr
    assert s.full.returncode == 1, err[-3000:]
    assert 'Logging error' not in err and 'Traceback' not in err, err[-3000:]
    line = F.assert_one_line_error(err, 'No space left')
    assert str(s.run_dir) in line
    assert len(s.full.records) >= s.at_fill  # Every complete record kept (check_records parses them strictly)
    F.check_records(s.run_dir)
    assert 'summary.json' not in s.files_after
    explained = [x for x in err.splitlines() if 'summary.json' in x]
    assert len(explained) == 1 and f'--restart {s.run_dir}' in explained[0]
    assert s.full.seconds < 60, 'the run did not stop soon after the disk filled up'


@pytest.mark.slow
@needs_root
def test_restart_after_disk_full_completes_without_loss_or_duplicate(disk_full_scenario):
    s = disk_full_scenario
    assert s.restart.returncode == 0, s.restart.stderr[-3000:]
    records = F.check_records(s.run_dir, before=s.full.records)
    assert F.steered(records) == SEARCH


# ====================================================================== restart of a damaged run directory
@pytest.mark.slow
@pytest.mark.parametrize('damage,fragments', [
    ('run_params_not_json', ('run_params.json', 'not valid JSON')),
    ('run_params_invalid', ('run_params.json', 'search_size')),
    ('initial_molecules_missing', ('initial_molecules.json', 'missing')),
    ('agent_truncated', ('agent.pkl', 'truncated')),
])
def test_restart_of_a_damaged_run_is_one_line_naming_the_file(signal_scenario, tmp_path, capsys, damage, fragments):
    run_dir = tmp_path / 'run'
    shutil.copytree(signal_scenario.copy, run_dir)
    if damage == 'run_params_not_json':
        (run_dir / 'run_params.json').write_text('{"search_size": 12, "qc":')
    elif damage == 'run_params_invalid':
        params = json.loads((run_dir / 'run_params.json').read_text())
        (run_dir / 'run_params.json').write_text(json.dumps({**params, 'search_size': -4}))
    elif damage == 'initial_molecules_missing':
        (run_dir / 'initial_molecules.json').unlink()
    elif damage == 'agent_truncated':
        data = (run_dir / 'agent.pkl').read_bytes()
        (run_dir / 'agent.pkl').write_bytes(data[:len(data) // 2])
    before = {p.name: p.stat().st_mtime for p in run_dir.iterdir()}
    code, err = _cli(capsys, '--restart', str(run_dir))
    assert code == 2, err[-3000:]
    F.assert_one_line_error(err, '--restart', *fragments)
    after = {p.name: p.stat().st_mtime for p in run_dir.iterdir() if p.name != '.lock'}
    assert after == before  # Nothing written


@pytest.mark.slow
def test_restart_with_runtime_log_on_a_full_disk(signal_scenario, tmp_path):
    """runtime.log cannot be written (here it is /dev/full): one line, no '--- Logging error ---' block"""
    if not os.path.exists('/dev/full'):
        pytest.skip('no /dev/full here')
    run_dir = tmp_path / 'run'
    shutil.copytree(signal_scenario.copy, run_dir)
    (run_dir / 'runtime.log').unlink()
    (run_dir / 'runtime.log').symlink_to('/dev/full')
    proc = F.run(tmp_path, '--restart', str(run_dir), '--quiet', timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Logging error' not in proc.stderr
    F.assert_one_line_error(proc.stderr, 'No space left', 'runtime.log', f'--restart {run_dir}')
    F.assert_no_processes_left(run_dir)


@pytest.mark.slow
def test_restart_opens_a_run_with_unreadable_agent_or_damaged_descriptions(signal_scenario, tmp_path):
    """An unreadable agent.pkl (here a directory: root reads any file) gives a warning and a new agent; invalid
    host_info.json, qc_spec.json or summary.json (rewritten by the restart) do not stop it"""
    from moldesign.steer.campaign import Campaign
    from moldesign.steer.params import SessionOptions
    run_dir = tmp_path / 'run'
    shutil.copytree(signal_scenario.copy, run_dir)
    (run_dir / 'agent.pkl').unlink(missing_ok=True)
    (run_dir / 'agent.pkl').mkdir()
    for name in ('host_info.json', 'qc_spec.json', 'summary.json'):
        (run_dir / name).write_text('{cut')
    campaign = Campaign.restart(run_dir, SessionOptions(quiet=True))
    try:
        assert campaign.agent is None
        assert any('agent.pkl cannot be read' in note and 'new MolDQN agent' in note for note in campaign.notes)
    finally:
        campaign.store.close()


def test_the_log_file_handler_reports_a_full_disk_once(tmp_path, capfd):
    """Python's FileHandler prints a traceback for every record it cannot write; ours calls back once"""
    if not os.path.exists('/dev/full'):
        pytest.skip('no /dev/full here')
    from moldesign.report.console import RunLogHandler
    (tmp_path / 'runtime.log').symlink_to('/dev/full')
    failures = []
    handler = RunLogHandler(tmp_path / 'runtime.log', on_failure=failures.append)
    test_logger = logging.getLogger('moldesign.test_faults.full')
    test_logger.addHandler(handler)
    test_logger.propagate = False
    try:
        for i in range(1000):
            test_logger.warning(f'line {i}')
    finally:
        test_logger.removeHandler(handler)
        handler.close()  # Flushing what is buffered fails too: no exception
    assert len(failures) == 1 and failures[0].errno == 28
    assert 'Logging error' not in capfd.readouterr().err


# ====================================================================== bad input: one line, nothing created
def _bad_input(capsys, out_dir: Path, *args: str, fragments=()) -> None:
    code, err = _cli(capsys, '--out-dir', str(out_dir), *args)
    assert code == 2, err[-3000:]
    F.assert_one_line_error(err, *fragments)


def test_initial_smiles_binary_file(tmp_path, capsys):
    binary = tmp_path / 'molecules.smi'
    binary.write_bytes(Path(sys.executable).resolve().read_bytes()[:20000])
    _bad_input(capsys, tmp_path / 'runs', '--initial-smiles', str(binary),
               fragments=('--initial-smiles', 'not a text file'))
    binary.write_bytes(b'\0' * 5000)  # Valid UTF-8, still binary
    _bad_input(capsys, tmp_path / 'runs', '--initial-smiles', str(binary),
               fragments=('--initial-smiles', 'not a text file'))
    assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('args,fragment', [
    (('--qc', 'pyscf/nosuchmethod/sto-3g'), 'does not know the method'),
    (('--qc', 'pyscf/hf/nosuchbasis'), 'no basis set'),
    (('--initial-count', '0'), '--initial-count'),
])
def test_bad_method_basis_or_count_is_refused_before_anything_runs(tmp_path, capsys, args, fragment):
    _bad_input(capsys, tmp_path / 'runs', *args, fragments=(args[0], fragment))
    assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('where', ['a-file', 'proc', 'read-only', 'unwritable', 'full'])
def test_out_dir_that_cannot_hold_a_run(tmp_path, capsys, where):
    out = tmp_path / where
    if where == 'a-file':
        out.write_text('x')
    elif where == 'proc':
        out = Path('/proc/moldesign-runs')
    elif where in ('read-only', 'full'):
        if not IS_ROOT:
            pytest.skip('mounting a tmpfs needs root')
        F.mount_tmpfs(out, '1m', read_only=where == 'read-only')
    else:
        out.mkdir()
        if IS_ROOT:  # Root writes into any directory, but not into an immutable one
            if subprocess.run(['chattr', '+i', str(out)], capture_output=True).returncode:
                pytest.skip('chattr +i is not supported here')
        else:
            out.chmod(0o555)
    try:
        if where == 'full':
            F.fill_disk(out)
        _bad_input(capsys, out / 'runs' if where == 'full' else out, fragments=('--out-dir',))
        if where == 'full':
            assert not (out / 'runs').exists() or not list((out / 'runs').iterdir())
    finally:
        if where in ('read-only', 'full'):
            F.umount(out)
        elif where == 'unwritable' and IS_ROOT:
            subprocess.run(['chattr', '-i', str(out)], capture_output=True)


def test_redis_unreachable_or_wrong_password_creates_nothing(tmp_path, capsys):
    if shutil.which('redis-server') is None:
        pytest.skip('redis-server is not installed (apt-get install redis-server)')
    server, port = F.start_redis(tmp_path, 'test-secret-pw')
    try:
        for args, fragment in [(('--redisport', str(port), '--redis-password', 'wrong'), 'password'),
                               (('--redisport', str(port)), 'password'),
                               (('--redisport', str(F.free_port())), 'Cannot reach Redis')]:
            _bad_input(capsys, tmp_path / 'runs', '--redishost', '127.0.0.1', *args,
                       fragments=('--redishost', fragment))
            assert not (tmp_path / 'runs').exists()
    finally:
        server.terminate()
        server.wait(10)


def test_two_runs_started_in_the_same_second_do_not_collide(tmp_path):
    from moldesign.steer.campaign import Campaign
    from moldesign.steer.params import RunParams, SessionOptions
    params = RunParams(initial_count=2, search_size=2, qc_workers=1)
    for attempt in range(5):  # Until both fall into the same second
        out = tmp_path / f'runs{attempt}'
        first = Campaign.create(params, out, SessionOptions(quiet=True), initial_smiles=['CCO', 'CC'])
        second = Campaign.create(params, out, SessionOptions(quiet=True), initial_smiles=['CCO', 'CC'])
        first.store.close()
        second.store.close()
        assert first.run_dir != second.run_dir
        for run in (first.run_dir, second.run_dir):
            assert (run / 'run_params.json').is_file() and (run / 'initial_molecules.json').is_file()
        if first.run_dir.name.split('_')[0] == second.run_dir.name.split('_')[0]:
            assert second.run_dir.name == first.run_dir.name + '_2'
            return
    pytest.skip('the two runs never started in the same second')
