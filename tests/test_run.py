"""End-to-end campaigns through run.py: real Parsl HTEX workers, real GFN2-xTB, real MolDQN.

Also the command line's handling of bad input, which stops before any QC.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from faultlib import qc_workers

from moldesign.steer.redis_local import free_port

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ('run_params.json', 'qc_spec.json', 'host_info.json', 'runtime.log', 'parsl_config.txt',
             'simulation_records.jsonld', 'screening_records.jsonld', 'summary.json',
             'reference_energies.json', 'report.md')
SMALL = ['--initial-count', '4', '--search-size', '6', '--rl-episodes', '2', '--quiet', '--verify-qc', 'none']


def _env():
    env = dict(os.environ)
    env['PATH'] = str(Path(sys.executable).parent) + os.pathsep + env.get('PATH', '')
    return env


def run_campaign(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run run.py to completion, return the finished process"""
    return subprocess.run([sys.executable, str(ROOT / 'run.py'), '--out-dir', str(tmp_path / 'runs'), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=_env())


def start_campaign(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / 'run.py'), '--out-dir', str(tmp_path / 'runs'), *args],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def strict_json_lines(path: Path) -> list:
    """Parse JSON Lines, refusing bare NaN/Infinity"""
    def _reject(token):
        raise ValueError(f'non-strict JSON token {token} in {path}')
    return [json.loads(line, parse_constant=_reject) for line in path.read_text().splitlines() if line.strip()]


def only_run_dir(tmp_path: Path) -> Path:
    runs = list((tmp_path / 'runs').iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def molecule_records(run_dir: Path) -> list:
    """Records of the molecules computed by the search (not atoms, not the verification of the best)"""
    return [r for r in strict_json_lines(run_dir / 'simulation_records.jsonld')
            if r.get('smiles') and r['phase'] != 'verify']


def check_no_duplicates(records: list):
    smiles = [r['smiles'] for r in records]
    assert len(smiles) == len(set(smiles)), 'a molecule was computed twice'


def wait_for_lines(path: Path, predicate, timeout: float) -> list:
    """Wait until the simulation records satisfy a predicate"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if predicate(records):
                return records
        time.sleep(0.2)
    raise AssertionError(f'timed out waiting for records in {path}')


def wait_for_steered(tmp_path: Path, n: int) -> Path:
    """Wait until a started campaign has written its run directory and ``n`` steered results"""
    runs = tmp_path / 'runs'
    deadline = time.monotonic() + 120
    while not (runs.exists() and any(runs.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.2)
    run_dir = only_run_dir(tmp_path)
    wait_for_lines(run_dir / 'simulation_records.jsonld',
                   lambda rs: sum(r.get('phase') == 'steered' for r in rs) >= n, timeout=180)
    return run_dir


# ---------------------------------------------------------------------- full campaigns
@pytest.mark.slow
def test_small_campaign(tmp_path):
    proc = run_campaign(tmp_path, *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), f'{name} missing'
    for name in ('run_params.json', 'qc_spec.json', 'host_info.json', 'summary.json', 'reference_energies.json'):
        json.loads((run_dir / name).read_text(), parse_constant=lambda t: (_ for _ in ()).throw(ValueError(t)))

    records = strict_json_lines(run_dir / 'simulation_records.jsonld')
    references = [r for r in records if r['method'] == 'compute_reference_energy']
    assert sorted(r['element'] for r in references) == ['C', 'F', 'H', 'N', 'O']
    molecules = molecule_records(run_dir)
    check_no_duplicates(molecules)
    assert sum(r['phase'] == 'initial' for r in molecules) == 4
    assert sum(r['phase'] == 'steered' for r in molecules) == 6
    assert [r['evaluation'] for r in molecules] == list(range(1, 11))
    for r in molecules:
        assert r['timestamp']['compute_started'] <= r['timestamp']['compute_ended'] <= r['timestamp']['result_received']
        if r['success']:
            assert r['objective'] == r['value']['atomization_energy'] < 0
    steered = [r for r in molecules if r['phase'] == 'steered']
    assert all(r['batch'] is not None and r['rank'] is not None and r['predicted'] is not None for r in steered)
    # Possibly empty: the thinker's own batches can spend a 6-molecule budget before the ML workers have started
    assert all(r['method'] == 'rank_candidates' for r in strict_json_lines(run_dir / 'screening_records.jsonld'))

    # The best molecule is reported, and it is the best of the records
    summary = json.loads((run_dir / 'summary.json').read_text())
    best = min((r for r in molecules if r['success']), key=lambda r: r['objective'])
    assert summary['top'][0]['smiles'] == best['smiles']
    assert best['smiles'] in proc.stdout
    assert summary['complete'] and 0 < summary['qc_utilization'] <= 1
    assert 'QC worker utilization' in proc.stdout

    # The report builds again from the finished run directory (issue: report from a real run)
    out = subprocess.run([sys.executable, '-m', 'moldesign.report', str(run_dir)], capture_output=True, text=True,
                         timeout=120, env=_env())
    assert out.returncode == 0, out.stderr
    assert (run_dir / 'report.md').is_file()


@pytest.mark.slow
def test_campaign_through_redis(tmp_path, redis_server):
    port, password = redis_server
    proc = run_campaign(tmp_path, *SMALL, '--redishost', '127.0.0.1', '--redisport', str(port),
                        '--redis-password', password, '--sources', 'moldqn')
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    molecules = molecule_records(run_dir)
    check_no_duplicates(molecules)
    steered = [r for r in molecules if r['phase'] == 'steered']
    assert len(steered) == 6 and all(r['source'] == 'moldqn' for r in steered)  # MolDQN's, screened
    assert strict_json_lines(run_dir / 'rl_records.jsonld')  # MolDQN ran on the ml executor
    assert json.loads((run_dir / 'run_params.json').read_text())['redishost'] == '127.0.0.1'


def test_redis_wrong_password_fails_fast(tmp_path, redis_server):
    port, _ = redis_server
    start = time.monotonic()
    proc = run_campaign(tmp_path, *SMALL, '--redishost', '127.0.0.1', '--redisport', str(port),
                        '--redis-password', 'wrong', timeout=60)
    assert proc.returncode == 2
    assert 'password' in proc.stderr and '--redishost' in proc.stderr
    assert time.monotonic() - start < 30


def test_redis_unreachable_fails_fast(tmp_path):
    start = time.monotonic()
    proc = run_campaign(tmp_path, *SMALL, '--redishost', '127.0.0.1', '--redisport', str(free_port()), timeout=60)
    assert proc.returncode == 2
    assert 'Cannot reach Redis' in proc.stderr
    assert time.monotonic() - start < 30


@pytest.mark.slow
def test_sigint_then_restart(tmp_path):
    """Ctrl-C mid-run keeps every result; --restart finishes the run without recomputing anything"""
    # A budget that outlasts the signal: QC never waits, so 12 molecules could be done before it arrives
    proc = start_campaign(tmp_path, '--initial-count', '4', '--search-size', '40', '--rl-episodes', '2', '--quiet',
                          '--verify-qc', 'pyscf/hf/sto-3g//xtb', '--verify-top', '2')
    try:
        run_dir = wait_for_steered(tmp_path, 2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert '--restart' in stderr
    before = molecule_records(run_dir)
    n_steered = sum(r['phase'] == 'steered' for r in before)
    assert 2 <= n_steered < 40
    check_no_duplicates(before)
    assert not [p for p in psutil.process_iter(['cmdline']) if str(run_dir) in ' '.join(p.info['cmdline'] or [])]

    proc = run_campaign(tmp_path, '--restart', str(run_dir), '--quiet')
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = molecule_records(run_dir)
    check_no_duplicates(after)
    assert after[:len(before)] == before  # Earlier results kept, new ones appended
    assert sum(r['phase'] == 'steered' for r in after) == 40
    assert [r['evaluation'] for r in after] == list(range(1, len(after) + 1))
    records = strict_json_lines(run_dir / 'simulation_records.jsonld')
    # Reference energies were not recomputed (5 atoms at each level)
    references = [(r['qc_spec'], r['element']) for r in records if r['method'] == 'compute_reference_energy']
    assert len(references) == len(set(references)) == 10
    # The best two were verified once each, at the end (one QC worker: verification waits for the search)
    verified = [r['smiles'] for r in records if r['phase'] == 'verify']
    assert len(verified) == len(set(verified)) >= 2
    top2 = [s for _, s in sorted((r['objective'], r['smiles']) for r in after if r['success'])[:2]]
    assert set(top2) <= set(verified)
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['answer']['smiles'] in top2 and summary['answer']['verify_qc'] == 'pyscf/hf/sto-3g//xtb'


@pytest.mark.slow
def test_worker_killed_mid_run(tmp_path):
    """kill -9 of a QC worker: Parsl re-runs the task on a new worker and the run finishes"""
    proc = start_campaign(tmp_path, '--initial-count', '4', '--search-size', '8', '--rl-episodes', '2', '--quiet',
                          '--verify-qc', 'none')
    try:
        run_dir = wait_for_steered(tmp_path, 1)
        workers = qc_workers(run_dir)
        assert workers, 'no QC worker process found'
        for worker in workers:
            worker.kill()
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    molecules = molecule_records(run_dir)
    check_no_duplicates(molecules)
    assert sum(r['phase'] == 'steered' for r in molecules) == 8


@pytest.mark.slow
def test_qc_failure_is_recorded_and_run_continues(tmp_path):
    """A molecule RDKit cannot embed in 3D becomes a failed record; the search goes on"""
    smiles_file = tmp_path / 'initial.smi'
    smiles_file.write_text('C1#CC1\nCCO\nCC(C)O\nOCCO\n')
    proc = run_campaign(tmp_path, '--initial-smiles', str(smiles_file), '--search-size', '3', '--rl-episodes', '2',
                        '--verify-qc', 'none',
                        '--quiet')
    assert proc.returncode == 0, proc.stderr[-3000:]
    molecules = molecule_records(only_run_dir(tmp_path))
    failed = [r for r in molecules if not r['success'] and r['phase'] == 'initial']  # Steered ones may fail too
    assert [r['smiles'] for r in failed] == ['C1#CC1']
    assert 'could not embed' in failed[0]['failure_info']['exception']
    assert all(r['success'] for r in molecules if r['phase'] == 'initial' and r['smiles'] != 'C1#CC1')
    assert sum(r['phase'] == 'steered' for r in molecules) == 3


# ---------------------------------------------------------------------- bad input: one line, before any QC
@pytest.mark.parametrize('args,message', [
    (['--qc', 'gaussian/hf/sto-3g'], '--qc'),
    (['--qc', 'pyscf/hf'], '--qc'),
    (['--config', 'no-such-machine'], '--config'),
    (['--search-size', '-3'], '--search-size'),
    (['--initial-count', 'many'], '--initial-count'),
    (['--parallel-guesses', '0'], '--parallel-guesses'),
    (['--restart', 'not-a-run'], '--restart'),
    (['--qc-keywords', '{"no_such_keyword": 1}'], '--qc'),
    (['--qc-keywords', 'not json'], '--qc-keywords'),
    (['--initial-count', '0'], '--initial-count'),
    (['--qc', 'pyscf/nosuchmethod/sto-3g'], '--qc'),
    (['--qc', 'pyscf/hf/nosuchbasis'], '--qc'),
    (['--qc', 'pyscf/hf/sto-3g', '--verify-top', '2'], '--verify-top'),
    (['--verify-qc', 'pyscf/b3lyp/nosuchbasis'], '--verify-qc'),
    (['--sources', 'moldqn,magic'], '--sources'),
])
def test_bad_options(tmp_path, args, message):
    proc = run_campaign(tmp_path, *args, timeout=60)
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if 'error' in line]
    assert len(error_lines) == 1 and message in error_lines[0], proc.stderr
    assert not (tmp_path / 'runs').exists()


def test_bad_initial_smiles_reported_with_line_numbers(tmp_path):
    smiles_file = tmp_path / 'initial.smi'
    smiles_file.write_text('CCO\nCCCl\nnot_a_smiles\nCCCCCCCCCC\n[NH4+]\nC.O\nCC\n')
    proc = run_campaign(tmp_path, '--initial-smiles', str(smiles_file), timeout=60)
    assert proc.returncode == 2
    line = [text for text in proc.stderr.splitlines() if 'error' in text]
    assert len(line) == 1
    for expected in ('5 invalid line(s)', 'line 2', 'Cl is not an allowed element', 'line 3', 'line 4',
                     'heavy atoms', 'line 5', 'Charged', 'line 6', 'fragments', '--skip-invalid'):
        assert expected in line[0], expected
    assert not (tmp_path / 'runs').exists()
