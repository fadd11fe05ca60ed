"""Helpers of the Slurm tests: configuration copies, run.py as a subprocess, watching jobs and worker pools.

Configurations are changed the documented way: copy ``config/<name>.py``, edit its constants, pass the copy
with ``--config path``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

import psutil

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SMALL = ('--initial-count', '4', '--search-size', '6', '--rl-episodes', '2', '--quiet', '--verify-qc', 'none')
ML_PLACED = ('--sources', 'moldqn')
"""For the placement tests: steered molecules only from MolDQN, so the ML executor's tasks (MolDQN, screening)
surely run and are recorded (with the neighbours as a source, the thinker's own first batches can cover a budget
this small before the ML job's first screening returns)"""
"""A campaign of a minute: 5 reference atoms, 4 initial and 6 steered molecules, GFN2-xTB"""
ELEMENTS = ['C', 'F', 'H', 'N', 'O']


def env_activation() -> str:
    """ENV_ACTIVATION that activates this test session's Python environment on a node"""
    bindir = Path(sys.executable).parent
    if (bindir / 'activate').is_file():
        return f'source {bindir / "activate"}'
    return f'export PATH={bindir}:$PATH'


def copy_config(name: str, dest: Path, **constants) -> Path:
    """Copy ``config/<name>.py`` to ``dest`` with constants replaced (each must be assigned once at the top)

    Args:
        name: Configuration name
        dest: Path of the copy
        constants: New values, written with ``repr``
    Returns:
        ``dest``
    """
    text = (REPO / 'config' / f'{name}.py').read_text()
    for key, value in constants.items():
        pattern = re.compile(rf'^{key}(\s*:[^=\n]*)?\s*=.*$', re.MULTILINE)
        text, count = pattern.subn(f'{key} = {value!r}', text)
        assert count == 1, f'config/{name}.py assigns {key} {count} times at the start of a line'
    dest.write_text(text)
    return dest


def test_config(name: str, dest: Path, **constants) -> Path:
    """A copy of a cluster configuration for the emulated cluster: loopback address, 1 core per node, short
    heartbeats"""
    values = dict(ADDRESS='127.0.0.1', CORES_PER_NODE=1, HEARTBEAT_PERIOD=5)
    if name == 'slurm':
        values.update(PARTITION='debug', ENV_ACTIVATION=env_activation(), WALLTIME='00:15:00')
    values.update(constants)
    return copy_config(name, dest, **values)


test_config.__test__ = False  # Not a test


def run_env(slurm_conf: Path, **extra: str) -> Dict[str, str]:
    """Environment of run.py: this Python's bin first on PATH, the cluster's SLURM_CONF, the repository on PYTHONPATH"""
    env = dict(os.environ)
    env['PATH'] = str(Path(sys.executable).parent) + os.pathsep + env.get('PATH', '')
    env['PYTHONPATH'] = str(REPO) + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    env['SLURM_CONF'] = str(slurm_conf)
    env.update(extra)
    return env


def start_run(tmp_path: Path, slurm_conf: Path, *args: str) -> subprocess.Popen:
    """Start ``run.py --out-dir tmp_path/runs ARGS``"""
    return subprocess.Popen([sys.executable, str(REPO / 'run.py'), '--out-dir', str(tmp_path / 'runs'), *args],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=run_env(slurm_conf))


def only_run_dir(tmp_path: Path) -> Path:
    runs = list((tmp_path / 'runs').iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def wait_run_dir(tmp_path: Path, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (tmp_path / 'runs').is_dir() and any((tmp_path / 'runs').iterdir()):
            return only_run_dir(tmp_path)
        time.sleep(0.2)
    raise AssertionError('run.py created no run directory')


def records(run_dir: Path, name: str = 'simulation_records.jsonld') -> List[dict]:
    """Records of a run (strict JSON)"""
    path = run_dir / name
    if not path.exists():
        return []

    def _reject(token):
        raise ValueError(f'non-strict JSON token {token} in {path}')
    return [json.loads(line, parse_constant=_reject) for line in path.read_text().splitlines() if line.strip()]


def molecule_records(run_dir: Path) -> List[dict]:
    return [r for r in records(run_dir) if r['method'] == 'compute_atomization_energy']


def reference_records(run_dir: Path) -> List[dict]:
    return [r for r in records(run_dir) if r['method'] == 'compute_reference_energy']


def assert_complete(run_dir: Path, initial: int = 4, steered: int = 6) -> List[dict]:
    """Every record written once: 5 reference atoms, ``initial`` + ``steered`` molecules, no duplicate SMILES"""
    assert sorted(r['element'] for r in reference_records(run_dir)) == ELEMENTS
    molecules = molecule_records(run_dir)
    smiles = [r['smiles'] for r in molecules]
    assert len(smiles) == len(set(smiles)), f'a molecule was computed twice: {smiles}'
    assert sum(r['phase'] == 'initial' for r in molecules) == initial
    assert sum(r['phase'] == 'steered' for r in molecules) == steered
    assert [r['evaluation'] for r in molecules] == list(range(1, len(molecules) + 1))
    return molecules


def pool_ids(run_dir: Path) -> Dict[str, Dict[str, int]]:
    """Worker pools (managers) of each executor of a run, from Parsl's logs: label -> {pool id: manager PID}"""
    pools: Dict[str, Dict[str, int]] = {}
    for log in run_dir.glob('parsl/*/*/block-*/*/manager.log'):
        label, pool = log.parents[2].name, log.parent.name
        match = re.search(r'MainProcess-(\d+)', log.read_text(errors='replace'))
        pools.setdefault(label, {})[pool] = int(match.group(1)) if match else -1
    return pools


def executor_of_records(run_dir: Path) -> Dict[str, Set[str]]:
    """method -> pool ids that ran it, from the records' ``worker_info``"""
    out: Dict[str, Set[str]] = {}
    for name in ('simulation_records.jsonld', 'rl_records.jsonld', 'screening_records.jsonld'):
        for r in records(run_dir, name):
            info = r.get('worker_info') or {}
            out.setdefault(r['method'], set()).add(info.get('PARSL_WORKER_POOL_ID'))
    return out


class Watcher(threading.Thread):
    """Samples Slurm jobs, job steps and the worker pools' nodes while a run goes on

    Attributes:
        jobs: job id -> {name, states seen, nodes while RUNNING}
        steps: step name -> nodes
        running_together: whether a ``parsl.qc`` and a ``parsl.ml`` job were seen RUNNING in one sample
        manager_nodes: PID of a ``process_worker_pool.py`` of the run -> its ``SLURMD_NODENAME``
    """

    def __init__(self, cluster, marker: str, period: float = 0.5):
        super().__init__(daemon=True)
        self.cluster, self.marker, self.period = cluster, marker, period
        self.jobs: Dict[str, dict] = {}
        self.steps: Dict[str, str] = {}
        self.running_together = False
        self.manager_nodes: Dict[int, Optional[str]] = {}
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.period)

    def sample(self):
        running = set()
        for job in self.cluster.jobs():
            seen = self.jobs.setdefault(job['id'], {'name': job['name'], 'states': set(), 'nodes': ''})
            seen['states'].add(job['state'])
            if job['state'] == 'RUNNING':
                seen['nodes'] = job['nodes'] or seen['nodes']  # A COMPLETING job lists only the nodes not yet done
                running.add(job['name'].split('.block')[0])
        self.running_together |= {'parsl.qc', 'parsl.ml'} <= running
        out = self.cluster.run('squeue', '--noheader', '-s', '-o', '%i|%j|%N', check=False).stdout
        for line in out.splitlines():
            parts = line.strip().split('|')
            if len(parts) == 3 and parts[1] in ('qc-workers', 'ml-workers'):
                self.steps[parts[1]] = parts[2]
        for proc in psutil.process_iter(['pid', 'cmdline']):
            cmdline = ' '.join(proc.info['cmdline'] or [])
            if 'process_worker_pool' in cmdline and self.marker in cmdline \
                    and proc.info['pid'] not in self.manager_nodes:
                try:
                    self.manager_nodes[proc.info['pid']] = proc.environ().get('SLURMD_NODENAME')
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass

    def stop(self):
        self._stop_event.set()
        self.join(10)

    def job_ids(self, prefix: str = 'parsl.') -> List[str]:
        return sorted(j for j, v in self.jobs.items() if v['name'].startswith(prefix))


def expand(cluster, nodelist: str) -> List[str]:
    """Node names of a Slurm host list"""
    return cluster.run('scontrol', 'show', 'hostnames', nodelist).stdout.split()


def jobs_left(cluster, job_ids: List[str]) -> List[dict]:
    """Jobs of ``job_ids`` still in the queue"""
    return [j for j in cluster.jobs() if j['id'] in job_ids]


def wait_jobs_gone(cluster, job_ids: List[str], timeout: float = 15) -> List[dict]:
    """Wait until none of the jobs is in the queue; returns those still there"""
    deadline = time.monotonic() + timeout
    left = jobs_left(cluster, job_ids)
    while left and time.monotonic() < deadline:
        time.sleep(0.25)
        left = jobs_left(cluster, job_ids)
    return left


def process_tail(text: str, n: int = 3000) -> str:
    return text[-n:] if text else ''
