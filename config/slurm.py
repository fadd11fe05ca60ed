"""A generic Slurm cluster: QC workers on a batch job of ``NODES`` nodes, the ML worker on a one-node job.

Run the thinker (``python run.py --config slurm ...``) on a login node (or inside a job): Parsl submits
two Slurm jobs with ``sbatch`` and their workers connect back to the thinker's host:

- ``qc``: ``NODES`` nodes, ``CORES_PER_NODE / QC_THREADS_PER_WORKER`` workers per node, each with
  ``OMP_NUM_THREADS=QC_THREADS_PER_WORKER``; ``srun`` starts one worker manager per node.
- ``ml``: one node (``ML_PARTITION``, optionally with GPUs), ``ml_workers`` workers.

Edit the constants below (at least ``PARTITION``, ``ACCOUNT``, ``CORES_PER_NODE`` and ``ENV_ACTIVATION``);
nothing is submitted until Parsl loads the configuration inside the task server.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from parsl.addresses import address_by_hostname, address_by_interface
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SimpleLauncher, SrunLauncher
from parsl.providers import SlurmProvider

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- edit these
PARTITION: Optional[str] = 'compute'
"""Partition of the QC job (``sinfo -s`` lists them); None for the cluster's default"""
ACCOUNT: Optional[str] = None
"""Account charged for the node hours (``sacctmgr show assoc user=$USER``); None if the cluster needs none"""
QOS: Optional[str] = None
"""Quality of service (``--qos``), if your cluster uses them"""
NODES = 1
"""Nodes of the QC job"""
CORES_PER_NODE = 32
"""Cores of one node that the workers use (``sinfo -o '%P %c'`` shows CPUs per node; count physical cores)"""
MEM_PER_NODE_GB: Optional[int] = None
"""Memory to request per node in GB (``--mem``); None for the partition's default"""
WALLTIME = '01:00:00'
"""Wall time of each job (HH:MM:SS). When a job ends, Parsl submits a new one if tasks are waiting;
to continue a run after the thinker itself stopped use ``python run.py --restart runs/<name>``"""
ENV_ACTIVATION = 'module load anaconda3; conda activate moldesign'
"""Shell commands that activate, on a compute node, the environment in which moldesign is installed
(e.g. ``source ~/miniforge3/bin/activate moldesign`` or ``source /path/to/venv/bin/activate``)"""
QC_THREADS_PER_WORKER = 1
"""OpenMP threads of one QC task: 1 for GFN2-xTB (``--qc xtb``), 4-8 for DFT with psi4 or PySCF.
Workers per node = CORES_PER_NODE // QC_THREADS_PER_WORKER"""
ML_PARTITION: Optional[str] = None
"""Partition of the ML job (e.g. a GPU partition); None: the same as PARTITION"""
ML_GPUS = 0
"""GPUs to request for the ML job, one per ML worker (0: TensorFlow on the CPU)"""
INTERFACE: Optional[str] = None
"""Network interface of the thinker's host that compute nodes can reach (e.g. 'ib0', 'eth0'; ``ip -br addr``);
None: the host name. Set it if workers never connect (see the ``qc`` job's output under runs/<name>/parsl)"""
SCHEDULER_OPTIONS = ''
"""Extra ``#SBATCH`` lines for both jobs, e.g. ``'#SBATCH --constraint=cpu'``"""


def qc_workers_per_node() -> int:
    """QC workers on one node: one per ``QC_THREADS_PER_WORKER`` cores (at least one)"""
    return max(1, CORES_PER_NODE // QC_THREADS_PER_WORKER)


def default_qc_workers() -> int:
    """QC tasks kept in flight by default: every QC worker of the job busy"""
    return NODES * qc_workers_per_node()


def worker_address() -> str:
    """Address of this host for the workers: that of ``INTERFACE`` if set, else the host name"""
    if INTERFACE is None:
        return address_by_hostname()
    try:
        return address_by_interface(INTERFACE)
    except OSError:
        raise ValueError(f'config/slurm.py: this host has no network interface {INTERFACE!r} '
                         f'(INTERFACE; list them with "ip -br addr")') from None


def _thread_exports(threads: int) -> str:
    return (f'export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} '
            f'TF_NUM_INTRAOP_THREADS={threads} TF_NUM_INTEROP_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2')


def make_config(run_dir: Path, qc_workers: int, ml_workers: int = 1) -> Config:
    """Build the Parsl configuration (submits nothing)

    Args:
        run_dir: Run directory (Parsl writes its logs and job scripts to ``run_dir/parsl``)
        qc_workers: QC tasks the thinker keeps in flight; the job runs ``NODES x`` :func:`qc_workers_per_node`
            workers whatever this number (a smaller number leaves workers idle, a larger one queues tasks)
        ml_workers: ML workers on the ML node
    Returns:
        Parsl configuration with executors ``qc`` and ``ml``
    """
    if qc_workers < 1 or ml_workers < 1:
        raise ValueError(f'Need at least one QC and one ML worker, got qc_workers={qc_workers}, ml_workers={ml_workers}')
    if qc_workers != default_qc_workers():
        logger.info(f'{qc_workers} QC tasks in flight for {default_qc_workers()} QC workers '
                    f'({NODES} node(s) x {qc_workers_per_node()})')
    address = worker_address()
    per_node = qc_workers_per_node()
    ml_threads = max(1, CORES_PER_NODE // ml_workers)
    common = dict(account=ACCOUNT, qos=QOS, walltime=WALLTIME, cores_per_node=CORES_PER_NODE,
                  mem_per_node=MEM_PER_NODE_GB, scheduler_options=SCHEDULER_OPTIONS, exclusive=True,
                  init_blocks=1, min_blocks=1, max_blocks=1)

    qc = HighThroughputExecutor(
        label='qc',
        address=address,
        encrypted=True,  # CurveZMQ between the thinker's host and the workers
        max_workers_per_node=per_node,
        cores_per_worker=QC_THREADS_PER_WORKER,
        prefetch_capacity=per_node,  # Room for the thinker's prefetched tasks (run.py --qc-prefetch): one per worker
        heartbeat_period=30,
        heartbeat_threshold=120,
        provider=SlurmProvider(
            partition=PARTITION,
            nodes_per_block=NODES,
            worker_init=f'{ENV_ACTIVATION}; {_thread_exports(QC_THREADS_PER_WORKER)}',
            # One worker manager per node, allowed to use all the node's cores (srun would bind it to one)
            launcher=SrunLauncher(overrides=f'--ntasks-per-node=1 --cpus-per-task={CORES_PER_NODE}'),
            **common,
        ),
    )
    ml = HighThroughputExecutor(
        label='ml',
        address=address,
        encrypted=True,
        max_workers_per_node=ml_workers,
        cores_per_worker=max(1, CORES_PER_NODE // ml_workers),
        available_accelerators=ML_GPUS if ML_GPUS else (),  # Sets CUDA_VISIBLE_DEVICES per worker
        prefetch_capacity=0,
        heartbeat_period=30,
        heartbeat_threshold=120,
        provider=SlurmProvider(
            partition=ML_PARTITION or PARTITION,
            nodes_per_block=1,
            gpus_per_node=ML_GPUS or None,
            worker_init=f'{ENV_ACTIVATION}; {_thread_exports(ml_threads)}',
            launcher=SimpleLauncher(),  # One node: the manager runs in the batch script on that node
            **common,
        ),
    )
    return Config(
        executors=[qc, ml],
        run_dir=str(Path(run_dir) / 'parsl'),
        retries=1,  # Re-run a task once if its worker died (failed QC is returned by Colmena, not retried)
        strategy='simple',  # Submit a new job when one ends (wall time) while tasks wait; never more than one
    )
