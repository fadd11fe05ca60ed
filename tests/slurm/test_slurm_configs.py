"""The cluster configurations' job scripts on a real Slurm (3 emulated nodes), without a campaign.

The jobs are submitted by the configuration's own Parsl providers (``provider.submit``: the job script
Parsl writes, run by ``sbatch``), or by Parsl itself loading the configuration (in a subprocess).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from campaign import REPO, process_tail, run_env, test_config

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from config._common import ACTIVATION_FAILED, pending_jobs, startup_errors  # noqa: E402


def load(path: Path):
    """Import a configuration file the way ``run.py --config PATH`` does"""
    spec = importlib.util.spec_from_file_location(f'config_copy_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def providers(config_path: Path, script_dir: Path) -> dict:
    """The providers of a configuration, ready to submit (label -> provider)"""
    config = load(config_path).make_config(script_dir.parent / 'run', 1)
    script_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for executor in config.executors:
        executor.provider.script_dir = str(script_dir)
        out[executor.label] = executor.provider
    return out


def wait_until(predicate, timeout: float, message: str, period: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(period)
    raise AssertionError(f'{message} within {timeout:.0f} s')


def job_info(cluster, job_id: str) -> str:
    return cluster.run('scontrol', 'show', 'job', job_id, check=False).stdout


# ---------------------------------------------------------------------- the cluster itself
def test_cluster_has_distinct_idle_nodes(slurm):
    out = slurm.run('sinfo', '--noheader', '-N', '-p', 'debug', '-o', '%N %t').stdout.split()
    assert dict(zip(out[::2], out[1::2])) == {'n1': 'idle', 'n2': 'idle', 'n3': 'idle'}
    names = slurm.run('srun', '-N3', '--ntasks-per-node=1', 'printenv', 'SLURMD_NODENAME').stdout.split()
    assert sorted(names) == ['n1', 'n2', 'n3']  # One host, three nodes that Slurm tells apart


# ---------------------------------------------------------------------- EXCLUSIVE and pending_jobs
def test_exclusive_pair_waits_on_one_node_and_pending_jobs_says_why(slurm, tmp_path):
    """On a one-node partition two --exclusive jobs cannot run together: the second pends for Resources
    (what the first real run showed, without any message); EXCLUSIVE=False lets them share the node"""
    exclusive = providers(test_config('slurm', tmp_path / 'ex.py', PARTITION='single'), tmp_path / 'ex')
    ids = [exclusive[label].submit('sleep 60', 1, job_name=f'parsl.{label}.block-0') for label in ('qc', 'ml')]
    states = lambda: {j['id']: j['state'] for j in slurm.jobs()}  # noqa: E731
    wait_until(lambda: states() == {ids[0]: 'RUNNING', ids[1]: 'PENDING'}, 20, 'the qc job running, the ml job pending')
    pending = wait_until(lambda: [p for p in pending_jobs(ids) if p[2] == 'Resources'], 20, 'reason Resources')
    assert pending == [(ids[1], 'PENDING', 'Resources')]
    assert states() == {ids[0]: 'RUNNING', ids[1]: 'PENDING'}
    assert pending_jobs([]) == [] and pending_jobs(['999999']) == []
    slurm.cancel_all()

    shared = providers(test_config('slurm', tmp_path / 'sh.py', PARTITION='single', EXCLUSIVE=False), tmp_path / 'sh')
    ids = [shared[label].submit('sleep 60', 1, job_name=f'parsl.{label}.block-0') for label in ('qc', 'ml')]
    wait_until(lambda: states() == {ids[0]: 'RUNNING', ids[1]: 'RUNNING'}, 20, 'both jobs running')
    assert pending_jobs(ids) == []
    assert {j['nodes'] for j in slurm.jobs()} == {'n1'}
    slurm.cancel_all()


# ---------------------------------------------------------------------- ENV_ACTIVATION that fails
@pytest.mark.parametrize('activation,export,expected', [
    # A module system that is not there: the last command of the chain fails
    ('module load anaconda3; conda activate moldesign', None, 'ENV_ACTIVATION of {config} failed with exit status 127'),
    # An activation that "works" but leaves Parsl off PATH (the job does not inherit the submitting PATH)
    (':', 'NONE', 'process_worker_pool.py (Parsl) is not on PATH after ENV_ACTIVATION of {config}'),
])
def test_failed_activation_stops_the_job_with_a_message(slurm, tmp_path, monkeypatch, activation, export, expected):
    if export:
        monkeypatch.setenv('SBATCH_EXPORT', export)
    config = test_config('slurm', tmp_path / 'bad.py', ENV_ACTIVATION=activation)
    expected = expected.format(config=config)  # The message names the configuration file to fix
    qc = providers(config, tmp_path / 'run' / 'parsl' / '000' / 'submit_scripts')['qc']
    job_id = qc.submit('echo WORKERS LAUNCHED', 1, job_name='parsl.qc.block-0')
    wait_until(lambda: not slurm.jobs(), 30, 'the job did not end')
    info = job_info(slurm, job_id)
    assert f'ExitCode={ACTIVATION_FAILED}:0' in info and 'JobState=FAILED' in info, info
    stderr = Path(qc.resources[job_id]['job_stderr_path']).read_text()
    stdout = Path(qc.resources[job_id]['job_stdout_path']).read_text()
    lines = [line for line in stderr.splitlines() if line.startswith('moldesign:')]
    assert len(lines) == 1 and expected in lines[0], stderr
    assert activation in lines[0]  # Names what to fix
    assert 'WORKERS LAUNCHED' not in stdout + stderr  # Nothing was started after the failure
    errors = startup_errors(tmp_path / 'run')  # What the lead's console message can show
    assert len(errors) == 1 and errors[0].endswith(lines[0]) and errors[0].startswith('parsl.qc.block-0')


# ---------------------------------------------------------------------- SBATCH_EXPORT=NONE: real workers
PROBE = '''
import json, sys, importlib.util
import parsl
from parsl import python_app
spec = importlib.util.spec_from_file_location('copy', sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
config = module.make_config(sys.argv[2], module.default_qc_workers())

def probe():
    import os
    return {k: os.environ.get(k) for k in ('SLURMD_NODENAME', 'OMP_NUM_THREADS', 'SLURM_EXPORT_ENV', 'PYTHONPATH')}

parsl.load(config)
try:
    futures = {label: [python_app(probe, executors=[label])() for _ in range(3)] for label in ('qc', 'ml')}
    print('RESULT ' + json.dumps({label: [f.result(timeout=120) for f in fs] for label, fs in futures.items()}))
finally:
    parsl.dfk().cleanup()
'''


@pytest.mark.slow
def test_workers_start_with_sbatch_export_none(slurm, tmp_path):
    """Sites with SBATCH_EXPORT=NONE: the job gets no environment from the submitting shell, and ``srun`` steps
    none from the job unless the configuration exports SLURM_EXPORT_ENV=ALL (else ``execve(): bash: No such
    file or directory``). ENV_ACTIVATION alone sets the workers up"""
    config = test_config('slurm', tmp_path / 'my_cluster.py', NODES=2, CORES_PER_NODE=2, QC_THREADS_PER_WORKER=2)
    (tmp_path / 'probe.py').write_text(PROBE)
    env = run_env(slurm.conf, SBATCH_EXPORT='NONE')
    proc = subprocess.run([sys.executable, str(tmp_path / 'probe.py'), str(config), str(tmp_path / 'run')],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    stderrs = '\n'.join(p.read_text()[-1500:] for p in tmp_path.glob('run/parsl/*/submit_scripts/*.stderr'))
    assert proc.returncode == 0, process_tail(proc.stderr) + stderrs
    result = json.loads(proc.stdout.split('RESULT ', 1)[1])
    assert {r['SLURMD_NODENAME'] for r in result['qc']} <= {'n1', 'n2', 'n3'}
    assert all(r['OMP_NUM_THREADS'] == '2' for r in result['qc'])  # QC_THREADS_PER_WORKER reached the tasks
    assert all(r['SLURM_EXPORT_ENV'] == 'ALL' for r in result['qc'])
    assert all(r['PYTHONPATH'] is None for r in result['qc'] + result['ml'])  # Nothing came from the submitter
    assert 'execve()' not in stderrs
    assert startup_errors(tmp_path / 'run') == []
    wait_until(lambda: not slurm.jobs(), 20, 'the jobs were still in the queue after Parsl cancelled them')
