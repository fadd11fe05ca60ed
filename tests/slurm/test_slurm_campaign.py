"""End-to-end campaigns through ``run.py`` on a real Slurm (3 emulated nodes), with the shipped configurations.

Each configuration is copied and its constants edited (the documented way), then passed with ``--config PATH``.
The copies set ``ADDRESS='127.0.0.1'``: every emulated node is this host.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from campaign import (ML_PLACED, REPO, SMALL, Watcher, assert_complete, env_activation, executor_of_records, expand,
                      molecule_records, only_run_dir, pool_ids, process_tail, records, reference_records, run_env,
                      start_run, test_config, wait_jobs_gone, wait_run_dir)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.slow


def _finish(proc: subprocess.Popen, timeout: float) -> tuple:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f'run.py did not finish within {timeout:.0f} s\n{process_tail(err)}')


# ---------------------------------------------------------------------- config/slurm.py: two sbatch jobs
@pytest.fixture(scope='module')
def sbatch_campaign(slurm_cluster, tmp_path_factory):
    """A small campaign whose qc (2 nodes) and ml (1 node) blocks are sbatch jobs, watched while it runs"""
    tmp_path = tmp_path_factory.mktemp('sbatch_campaign')
    config = test_config('slurm', tmp_path / 'my_cluster.py', NODES=2)
    start = time.monotonic()
    proc = start_run(tmp_path, slurm_cluster.conf, '--config', str(config), *SMALL, *ML_PLACED)
    watcher = Watcher(slurm_cluster, marker=str(tmp_path))
    watcher.start()
    try:
        stdout, stderr = _finish(proc, 300)
    finally:
        watcher.stop()
    elapsed = time.monotonic() - start
    left_at_exit = [j for j in slurm_cluster.jobs() if j['id'] in watcher.job_ids()]
    logger.info(f'sbatch campaign: {elapsed:.1f} s')
    return dict(proc=proc, stdout=stdout, stderr=stderr, run_dir=only_run_dir(tmp_path), watcher=watcher,
                left_at_exit=left_at_exit, cluster=slurm_cluster, elapsed=elapsed)


def test_campaign_runs_on_two_sbatch_jobs(sbatch_campaign):
    c = sbatch_campaign
    assert c['proc'].returncode == 0, process_tail(c['stderr'])
    watcher = c['watcher']
    names = {v['name'].split('.block')[0] for v in watcher.jobs.values()}
    assert names == {'parsl.qc', 'parsl.ml'}, watcher.jobs  # One job per executor, nothing else submitted
    assert len(watcher.job_ids()) == 2, watcher.jobs
    assert watcher.running_together, f'the qc and ml jobs never ran at the same time: {watcher.jobs}'
    qc_job = next(v for v in watcher.jobs.values() if v['name'].startswith('parsl.qc'))
    assert len(expand(c['cluster'], qc_job['nodes'])) == 2  # NODES=2

    # Every record written once; the steering ran
    assert_complete(c['run_dir'])
    # No job of the run left once run.py exited (running or pending; a job may still be completing)
    assert not [j for j in c['left_at_exit'] if j['state'] in ('RUNNING', 'PENDING')], c['left_at_exit']
    assert not wait_jobs_gone(c['cluster'], watcher.job_ids()), 'jobs of the run are still in squeue'


def test_workers_connected_from_their_jobs_nodes(sbatch_campaign):
    """QC tasks ran in the qc job's worker pools (one per node of its 2 nodes), ML tasks in the ml job's pool"""
    c = sbatch_campaign
    pools = pool_ids(c['run_dir'])
    used = executor_of_records(c['run_dir'])
    assert set(pools) == {'qc', 'ml'}
    assert len(pools['qc']) == 2 and len(pools['ml']) == 1, pools
    for method in ('compute_reference_energy', 'compute_atomization_energy'):
        assert used[method] <= set(pools['qc']), (method, used[method], pools)
    assert used['rank_candidates']  # Screening always runs; MolDQN may not have returned in so short a run
    for method in ('generate_molecules', 'rank_candidates', 'warm_up'):
        assert used.get(method, set()) <= set(pools['ml']), (method, used.get(method), pools)
    assert used['compute_atomization_energy'] == set(pools['qc'])  # Both QC nodes did work

    # Each pool ran on a node of its own job (the manager's SLURMD_NODENAME, sampled while it ran)
    nodes = c['watcher'].manager_nodes
    jobs = {v['name'].split('.block')[0]: set(expand(c['cluster'], v['nodes'])) for v in c['watcher'].jobs.values()}
    qc_nodes = {nodes.get(pid) for pid in pools['qc'].values()}
    ml_nodes = {nodes.get(pid) for pid in pools['ml'].values()}
    assert qc_nodes == jobs['parsl.qc'], (qc_nodes, jobs, nodes)
    assert ml_nodes == jobs['parsl.ml'], (ml_nodes, jobs, nodes)
    assert not qc_nodes & ml_nodes  # Exclusive nodes


# ---------------------------------------------------------------------- Ctrl-C, then --restart
INTERRUPTED = 40
"""Steered molecules of the interrupted campaign"""

@pytest.fixture(scope='module')
def interrupted_campaign(slurm_cluster, tmp_path_factory):
    """A campaign interrupted with SIGINT after 2 steered results (in-flight tasks waited for at most 20 s)"""
    tmp_path = tmp_path_factory.mktemp('interrupted')
    config = test_config('slurm', tmp_path / 'my_cluster.py', NODES=1)
    # A budget the run cannot finish between the second steered result and the signal: QC no longer waits for the
    # ml job, and SMALL's 6 steered molecules can all land within the polling interval (CI saw a run complete
    # before its SIGINT)
    proc = start_run(tmp_path, slurm_cluster.conf, '--config', str(config), *SMALL, '--search-size', str(INTERRUPTED),
                     '--shutdown-timeout', '20')
    watcher = Watcher(slurm_cluster, marker=str(tmp_path))
    watcher.start()
    try:
        run_dir = wait_run_dir(tmp_path)
        deadline = time.monotonic() + 240
        while sum(r['phase'] == 'steered' for r in _safe_molecules(run_dir)) < 2:
            assert proc.poll() is None, f'run.py exited early: {process_tail(proc.communicate()[1])}'
            assert time.monotonic() < deadline, 'no steered result within 240 s'
            time.sleep(0.2)
        job_ids = watcher.job_ids()
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        stdout, stderr = _finish(proc, 120)
        exit_seconds = time.monotonic() - sent
    finally:
        watcher.stop()
    left = wait_jobs_gone(slurm_cluster, job_ids, timeout=15)
    return dict(proc=proc, stderr=stderr, run_dir=run_dir, tmp_path=tmp_path, exit_seconds=exit_seconds,
                job_ids=job_ids, left=left, before=molecule_records(run_dir), cluster=slurm_cluster)


def _safe_molecules(run_dir: Path) -> list:
    try:
        return molecule_records(run_dir)
    except ValueError:  # A line being written
        return []


def test_sigint_stops_and_cancels_the_jobs(interrupted_campaign):
    c = interrupted_campaign
    assert c['proc'].returncode == 130, process_tail(c['stderr'])
    assert len(c['job_ids']) == 2, c['job_ids']
    assert not c['left'], f'jobs still in squeue after Ctrl-C: {c["left"]}'
    smiles = [r['smiles'] for r in c['before']]
    assert len(smiles) == len(set(smiles))
    assert 2 <= sum(r['phase'] == 'steered' for r in c['before']) <= 6


def test_sigint_exits_within_seconds(interrupted_campaign):
    c = interrupted_campaign
    assert c['proc'].returncode == 130
    assert c['exit_seconds'] < 10, f'run.py took {c["exit_seconds"]:.1f} s to exit after SIGINT'


def test_restart_finishes_on_slurm(interrupted_campaign, slurm):
    c = interrupted_campaign
    before = c['before']
    watcher = Watcher(slurm, marker=str(c['run_dir']))
    watcher.start()
    try:
        proc = start_run(c['tmp_path'], slurm.conf, '--restart', str(c['run_dir']), '--quiet')
        stdout, stderr = _finish(proc, 300)
    finally:
        watcher.stop()
    assert proc.returncode == 0, process_tail(stderr)
    after = assert_complete(c['run_dir'], steered=INTERRUPTED)
    assert after[:len(before)] == before  # Nothing lost, nothing recomputed
    assert len(reference_records(c['run_dir'])) == 5
    # The restart ran on Slurm again, with the run's own configuration
    assert {v['name'].split('.block')[0] for v in watcher.jobs.values()} == {'parsl.qc', 'parsl.ml'}, watcher.jobs


# ---------------------------------------------------------------------- a partition that does not exist
def test_nonexistent_partition_fails_fast_with_one_line(slurm, tmp_path):
    config = test_config('slurm', tmp_path / 'my_cluster.py', PARTITION='nosuchpartition')
    start = time.monotonic()
    proc = start_run(tmp_path, slurm.conf, '--config', str(config), *SMALL)
    stdout, stderr = _finish(proc, 120)
    elapsed = time.monotonic() - start
    assert proc.returncode not in (0, None)
    assert elapsed < 20, f'took {elapsed:.0f} s to fail'
    assert 'Traceback' not in stderr and '--restart' not in stderr, stderr
    named = [line for line in stderr.splitlines() if 'nosuchpartition' in line]
    assert len(named) == 1, stderr
    assert 'partition' in named[0].lower()
    assert not slurm.jobs()


# ---------------------------------------------------------------------- a block that never starts
def test_a_pending_block_is_explained_on_the_console(slurm, tmp_path):
    """Two --exclusive jobs on a one-node partition: the ml job pends for Resources; the console says so, naming
    the job and Slurm's reason, instead of a silent wait (then Ctrl-C ends the run and cancels both jobs)"""
    config = test_config('slurm', tmp_path / 'ex.py', PARTITION='single', EXCLUSIVE=True)
    # A budget that outlasts the warning: QC does not wait for the pending ml job, so 6 molecules could end the run
    proc = start_run(tmp_path, slurm.conf, '--config', str(config), *SMALL, '--search-size', '200',
                     '--pending-warning', '10')
    lines: list = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not any('No result from the ml workers' in line for line in lines):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    warning = [line for line in lines if 'No result from the ml workers' in line]
    assert warning, ''.join(lines)[-3000:]
    assert 'PENDING (Resources)' in warning[0] and 'EXCLUSIVE' in warning[0], warning[0]
    assert not any('No result from the qc workers' in line and 'PENDING' in line for line in lines)  # QC ran
    assert reference_records(only_run_dir(tmp_path))  # ... and computed
    assert proc.returncode == 130
    assert not wait_jobs_gone(slurm, [j['id'] for j in slurm.jobs()])


# ---------------------------------------------------------------------- one allocation split between executors
@pytest.fixture(scope='module')
def allocation_campaign(slurm_cluster, tmp_path_factory):
    """docs/slurm_allocation.sbatch (a copy, ENV_ACTIVATION and CONFIG edited) submitted on 3 nodes"""
    tmp_path = tmp_path_factory.mktemp('allocation')
    config = test_config('slurm_allocation', tmp_path / 'alloc.py')
    script = (REPO / 'docs' / 'slurm_allocation.sbatch').read_text()
    script = _set_line(script, 'ENV_ACTIVATION=', f'ENV_ACTIVATION="{env_activation()}"')
    script = _set_line(script, 'CONFIG=', f'CONFIG={config}')
    (tmp_path / 'job.sbatch').write_text(script)
    out = tmp_path / 'job.out'
    start = time.monotonic()
    submit = subprocess.run(['sbatch', '--parsable', '--nodes=3', f'--output={out}', str(tmp_path / 'job.sbatch'),
                             '--out-dir', str(tmp_path / 'runs'), *SMALL, *ML_PLACED],
                            cwd=REPO, env=run_env(slurm_cluster.conf), capture_output=True, text=True, timeout=30)
    assert submit.returncode == 0, submit.stderr
    job_id = submit.stdout.strip().split(';')[0]
    watcher = Watcher(slurm_cluster, marker=str(tmp_path))
    watcher.start()
    try:
        deadline = time.monotonic() + 300
        while any(j['id'] == job_id for j in slurm_cluster.jobs()) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        watcher.stop()
    elapsed = time.monotonic() - start
    state = slurm_cluster.run('scontrol', 'show', 'job', job_id, check=False).stdout
    logger.info(f'allocation campaign: {elapsed:.1f} s')
    return dict(job_id=job_id, out=out.read_text() if out.exists() else '', watcher=watcher, state=state,
                run_dir=only_run_dir(tmp_path), cluster=slurm_cluster, elapsed=elapsed)


def _set_line(text: str, prefix: str, line: str) -> str:
    lines = text.splitlines()
    hits = [i for i, text_line in enumerate(lines) if text_line.startswith(prefix)]
    assert len(hits) == 1, f'{prefix} must start exactly one line of the script'
    lines[hits[0]] = line
    return '\n'.join(lines) + '\n'


def test_allocation_runs_the_whole_campaign_in_one_job(allocation_campaign):
    c = allocation_campaign
    assert 'JobState=COMPLETED' in c['state'] and 'ExitCode=0:0' in c['state'], c['state'] + c['out'][-3000:]
    assert 'Run directory' in c['out'], c['out'][-3000:]
    assert_complete(c['run_dir'])
    # No job but the allocation itself: the executors started job steps, not jobs
    assert list(c['watcher'].jobs) == [c['job_id']], c['watcher'].jobs
    # The steps: QC on the first two nodes, ML on the last
    assert expand(c['cluster'], c['watcher'].steps['qc-workers']) == ['n1', 'n2'], c['watcher'].steps
    assert expand(c['cluster'], c['watcher'].steps['ml-workers']) == ['n3'], c['watcher'].steps


def test_allocation_qc_on_qc_nodes_ml_on_ml_node(allocation_campaign):
    """From the records' pool ids, Parsl's manager logs and the managers' SLURMD_NODENAME"""
    c = allocation_campaign
    pools = pool_ids(c['run_dir'])
    used = executor_of_records(c['run_dir'])
    nodes = c['watcher'].manager_nodes
    node_of = {pool: nodes.get(pid) for label in pools for pool, pid in pools[label].items()}
    qc_ran_on = {node_of.get(p) for m in ('compute_reference_energy', 'compute_atomization_energy') for p in used[m]}
    ml_ran_on = {node_of.get(p) for m in ('generate_molecules', 'rank_candidates', 'warm_up')
                 for p in used.get(m, set())}
    assert qc_ran_on == {'n1', 'n2'}, (qc_ran_on, node_of, used)
    assert ml_ran_on == {'n3'}, (ml_ran_on, node_of, used)


def test_allocation_records_name_the_node(allocation_campaign):
    run_dir = allocation_campaign['run_dir']
    qc = {(r.get('worker_info') or {}).get('node') for r in molecule_records(run_dir)}
    ml = {(r.get('worker_info') or {}).get('node')
          for name in ('rl_records.jsonld', 'screening_records.jsonld')
          for r in records(run_dir, name)}
    assert qc == {'n1', 'n2'} and ml == {'n3'}, (qc, ml)
