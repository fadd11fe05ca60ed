"""ALCF Polaris, one PBS job split between the executors: QC on all nodes but the last, ML on the last.

The PBS twin of ``config/slurm_allocation.py``: ``run.py`` runs inside one batch job
(``qsub docs/polaris_allocation.pbs``) on its first node and never submits further jobs. It reads the job's
nodes from ``PBS_NODEFILE`` and starts one worker manager per node with ``mpiexec --hosts``:

- ``qc``: the first N-1 nodes, ``CORES_PER_NODE / QC_THREADS_PER_WORKER`` workers each, pinned to their own
  physical cores (the thinker shares the first node with QC workers);
- ``ml``: the last node (``ML_NODES`` last nodes), one A100 per ML worker.

With a one-node job QC and ML share the node. Copy this file to change the constants and pass the copy with
``--config path/to/copy.py``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

from config import _common
from config._common import (StepLauncher, pbs_allocation_nodes, pinned_cores, split_nodes, thread_exports,
                            worker_address)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- edit these (in your copy)
QC_THREADS_PER_WORKER = 4
"""OpenMP threads (and physical cores) of one QC task: 1 for GFN2-xTB, 4-8 for DFT with psi4 or PySCF"""
PIN_QC_WORKERS = True
"""Pin each QC worker to its own physical cores (CPUs 0-31 are the 32 cores, 32-63 their hyperthreads)"""
ML_NODES = 1
"""Nodes at the end of the job that run the ML workers"""
ML_GPUS = 4
"""GPUs of an ML node that ML workers may use, one each (0: TensorFlow on the CPU)"""
MPIEXEC_OPTIONS = ''
"""Extra options of both ``mpiexec`` launches"""
INTERFACE: Optional[str] = 'bond0'
"""Network interface of the first node that the other nodes reach; missing: the host name's address"""
ADDRESS: Optional[str] = None
"""Address the workers connect to, used as given (overrides INTERFACE)"""
HEARTBEAT_PERIOD = 30
"""Seconds between heartbeats of workers and the thinker; a worker is declared lost after 4 missed"""
# ---------------------------------------------------------------- Polaris facts
CORES_PER_NODE = 32
"""Physical cores of a Polaris node (AMD EPYC Milan; 64 hardware threads)"""
HW_THREADS_PER_NODE = 64


def allocation() -> Tuple[List[str], List[str]]:
    """(QC nodes, ML nodes) of the PBS job this process runs in

    Raises:
        ValueError: outside a PBS job
    """
    return split_nodes(pbs_allocation_nodes(), ML_NODES)


def qc_workers_per_node() -> int:
    """QC workers on one node: one per ``QC_THREADS_PER_WORKER`` physical cores (at least one)"""
    return max(1, CORES_PER_NODE // QC_THREADS_PER_WORKER)


def default_qc_workers() -> int:
    """QC tasks kept in flight by default: every QC worker of the QC nodes busy"""
    qc_nodes, _ = allocation()
    return len(qc_nodes) * qc_workers_per_node()


def make_config(run_dir: Path, qc_workers: int, ml_workers: int = 1) -> Config:
    """Build the Parsl configuration (starts nothing)

    Args:
        run_dir: Run directory (Parsl writes its logs to ``run_dir/parsl``)
        qc_workers: QC tasks the thinker keeps in flight
        ml_workers: ML workers on the ML node, one GPU each (at most ``ML_GPUS``)
    Returns:
        Parsl configuration with executors ``qc`` and ``ml``
    Raises:
        ValueError: outside a PBS job, bad worker counts, or a loopback worker address
    """
    if qc_workers < 1 or ml_workers < 1:
        raise ValueError(f'Need at least one QC and one ML worker, got qc_workers={qc_workers}, '
                         f'ml_workers={ml_workers}')
    if ML_GPUS and ml_workers > ML_GPUS:
        raise ValueError(f'{__file__}: {ml_workers} ML workers but ML_GPUS={ML_GPUS} (one GPU each)')
    qc_nodes, ml_nodes = allocation()
    per_node = qc_workers_per_node()
    gpus = ml_workers if ML_GPUS else 0
    address = worker_address(__file__, ADDRESS, INTERFACE, interface_required=False)
    logger.info(f'Allocation: QC on {",".join(qc_nodes)} ({per_node} worker(s) each), ML on {",".join(ml_nodes)}')
    heartbeat = dict(heartbeat_period=HEARTBEAT_PERIOD, heartbeat_threshold=4 * HEARTBEAT_PERIOD)
    # One manager per node; it starts the node's workers. Cray MPICH's mpiexec passes the environment on
    mpiexec = (f'mpiexec -n {{nodes}} --ppn 1 --hosts {{nodelist}} --depth={HW_THREADS_PER_NODE} --cpu-bind depth '
               f'{MPIEXEC_OPTIONS}').strip()
    ml_threads = max(1, CORES_PER_NODE // ml_workers)

    def _provider(nodes: List[str], threads: int) -> LocalProvider:
        return LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1,
                             worker_init=thread_exports(threads) + '\n',
                             launcher=StepLauncher(mpiexec, nodes))

    qc = HighThroughputExecutor(
        label='qc',
        address=address,
        encrypted=True,
        max_workers_per_node=per_node,
        cores_per_worker=HW_THREADS_PER_NODE // per_node,  # Parsl counts hardware threads
        cpu_affinity=pinned_cores(per_node, QC_THREADS_PER_WORKER) if PIN_QC_WORKERS else 'none',
        prefetch_capacity=per_node,
        **heartbeat,
        provider=_provider(qc_nodes, QC_THREADS_PER_WORKER),
    )
    ml = HighThroughputExecutor(
        label='ml',
        address=address,
        encrypted=True,
        max_workers_per_node=ml_workers,
        cores_per_worker=max(1, HW_THREADS_PER_NODE // ml_workers),
        available_accelerators=gpus if gpus else (),  # CUDA_VISIBLE_DEVICES per worker
        prefetch_capacity=0,
        **heartbeat,
        provider=_provider(ml_nodes, ml_threads),
    )
    return Config(
        executors=[qc, ml],
        run_dir=str(Path(run_dir) / 'parsl'),
        retries=1,
        strategy='simple',  # Restart a worker launch that ended while tasks wait (never a new job)
        strategy_period=1,  # Seconds between checks of the blocks: a job the scheduler refuses is reported at once
    )


def diagnose(run_dir: Path, job_ids: Sequence[str]) -> List[str]:
    """Why the workers have not started yet (printed by run.py when an executor stays silent): the jobs' own
    failure lines; ``qstat -f <job id>`` tells the rest"""
    return _common.startup_errors(run_dir) or [f'check the jobs with: qstat -f {" ".join(job_ids)}' if job_ids
                                               else 'no job was submitted yet']
