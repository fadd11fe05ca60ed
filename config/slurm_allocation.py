"""One Slurm allocation split between the executors: QC on all nodes but the last, ML on the last.

The original application's layout: ``run.py`` runs inside one batch job (``sbatch docs/slurm_allocation.sbatch``)
and never submits further jobs. It reads the job's nodes (``SLURM_JOB_NODELIST``, expanded with
``scontrol show hostnames``) and starts the worker managers as job steps with ``srun --nodelist``:

- ``qc``: one manager per node on the first N-1 nodes (the thinker shares the first node with QC workers),
  ``cores // QC_THREADS_PER_WORKER`` workers each, ``OMP_NUM_THREADS=QC_THREADS_PER_WORKER``;
- ``ml``: one manager on the last node (``ML_NODES`` last nodes), ``ml_workers`` workers.

With a one-node allocation QC and ML share the node. The steps are named ``qc-workers`` and ``ml-workers``
(``squeue -s`` shows where each runs). Copy this file to change the constants and pass the copy with
``--config path/to/copy.py``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

from config import _common
from config._common import (SLURM_STEP_EXPORT, StepLauncher, slurm_allocation_nodes, split_nodes, thread_exports,
                            worker_address)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- edit these (in your copy)
QC_THREADS_PER_WORKER = 1
"""OpenMP threads of one QC task: 1 for GFN2-xTB, 4-8 for DFT with psi4 or PySCF"""
CORES_PER_NODE: Optional[int] = None
"""Cores of a node the workers use; None: what Slurm gave the job on the first node (``SLURM_CPUS_ON_NODE``)"""
ML_NODES = 1
"""Nodes at the end of the allocation that run the ML workers"""
ML_GPUS = 0
"""GPUs of an ML node (0: TensorFlow on the CPU); the ML step asks for one per ML worker"""
SRUN_OPTIONS = ''
"""Extra options of both ``srun`` steps (e.g. ``'--mem=0'``)"""
INTERFACE: Optional[str] = None
"""Network interface of the first node that the other nodes reach (e.g. 'ib0'); None: the host name's address"""
ADDRESS: Optional[str] = None
"""Address the workers connect to, used as given (overrides INTERFACE); '127.0.0.1' only for emulated nodes"""
HEARTBEAT_PERIOD = 30
"""Seconds between heartbeats of workers and the thinker; a worker is declared lost after 4 missed"""


def allocation() -> Tuple[List[str], List[str]]:
    """(QC nodes, ML nodes) of the allocation this process runs in

    Raises:
        ValueError: outside a Slurm allocation
    """
    return split_nodes(slurm_allocation_nodes(), ML_NODES)


def cores_per_node() -> int:
    """Cores of one node for the workers: ``CORES_PER_NODE``, else ``SLURM_CPUS_ON_NODE``, else this host's"""
    if CORES_PER_NODE:
        return CORES_PER_NODE
    return int(os.environ.get('SLURM_CPUS_ON_NODE') or os.cpu_count() or 1)


def qc_workers_per_node() -> int:
    """QC workers on one node: one per ``QC_THREADS_PER_WORKER`` cores (at least one)"""
    return max(1, cores_per_node() // QC_THREADS_PER_WORKER)


def default_qc_workers() -> int:
    """QC tasks kept in flight by default: every QC worker of the QC nodes busy"""
    qc_nodes, _ = allocation()
    return len(qc_nodes) * qc_workers_per_node()


def make_config(run_dir: Path, qc_workers: int, ml_workers: int = 1) -> Config:
    """Build the Parsl configuration (starts nothing)

    Args:
        run_dir: Run directory (Parsl writes its logs to ``run_dir/parsl``)
        qc_workers: QC tasks the thinker keeps in flight
        ml_workers: ML workers on the ML node
    Returns:
        Parsl configuration with executors ``qc`` and ``ml``
    Raises:
        ValueError: outside a Slurm allocation, bad worker counts, or a loopback worker address
    """
    if qc_workers < 1 or ml_workers < 1:
        raise ValueError(f'Need at least one QC and one ML worker, got qc_workers={qc_workers}, '
                         f'ml_workers={ml_workers}')
    qc_nodes, ml_nodes = allocation()
    cores = cores_per_node()
    per_node = qc_workers_per_node()
    gpus = min(ml_workers, ML_GPUS) if ML_GPUS else 0
    if ML_GPUS and ml_workers > ML_GPUS:
        raise ValueError(f'{__file__}: {ml_workers} ML workers but ML_GPUS={ML_GPUS} (one GPU each)')
    address = worker_address(__file__, ADDRESS, INTERFACE)
    logger.info(f'Allocation: QC on {",".join(qc_nodes)} ({per_node} worker(s) each), ML on {",".join(ml_nodes)}')
    heartbeat = dict(heartbeat_period=HEARTBEAT_PERIOD, heartbeat_threshold=4 * HEARTBEAT_PERIOD)
    # --overlap: the steps may share a node (one-node allocation, and the batch step on the first node)
    srun = ('srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --nodelist={nodelist} '
            f'--cpus-per-task={cores} --overlap --export=ALL {SRUN_OPTIONS}').strip()

    def _provider(step: str, nodes: List[str], threads: int, gpus_per_node: int = 0) -> LocalProvider:
        gpu_option = f' --gpus-per-node={gpus_per_node}' if gpus_per_node else ''
        return LocalProvider(
            init_blocks=1, min_blocks=1, max_blocks=1,
            worker_init='\n'.join([thread_exports(threads), SLURM_STEP_EXPORT]) + '\n',
            launcher=StepLauncher(f'{srun}{gpu_option} --job-name={step}', nodes),
        )

    qc = HighThroughputExecutor(
        label='qc',
        address=address,
        encrypted=True,
        max_workers_per_node=per_node,
        cores_per_worker=QC_THREADS_PER_WORKER,
        prefetch_capacity=per_node,  # One prefetched task waiting at each worker (run.py --qc-prefetch)
        **heartbeat,
        provider=_provider('qc-workers', qc_nodes, QC_THREADS_PER_WORKER),
    )
    ml = HighThroughputExecutor(
        label='ml',
        address=address,
        encrypted=True,
        max_workers_per_node=ml_workers,
        cores_per_worker=max(1, cores // ml_workers),
        available_accelerators=gpus if gpus else (),
        prefetch_capacity=0,
        **heartbeat,
        provider=_provider('ml-workers', ml_nodes, max(1, cores // ml_workers), gpus),
    )
    return Config(
        executors=[qc, ml],
        run_dir=str(Path(run_dir) / 'parsl'),
        retries=1,
        strategy='simple',  # Restart a worker step that ended while tasks wait (a step, never a new job)
        strategy_period=1,  # Seconds between checks of the blocks: a job the scheduler refuses is reported at once
    )


def diagnose(run_dir: Path, job_ids: Sequence[str]) -> List[str]:
    """Why the workers have not started yet (printed by run.py when an executor stays silent)"""
    return _common.slurm_diagnosis(run_dir, job_ids)
