"""ALCF Polaris (PBS Pro): QC workers on a batch job of CPU nodes, the ML worker on a one-node GPU job.

Run the thinker (``python run.py --config polaris ...``) on a login node; Parsl submits two PBS jobs
from there and their workers connect back to the login node over the high-speed network (``bond0``):

- ``qc``: ``NODES`` nodes, ``CORES_PER_NODE / QC_THREADS_PER_WORKER`` workers per node, each pinned to
  its own ``QC_THREADS_PER_WORKER`` physical cores with ``OMP_NUM_THREADS=QC_THREADS_PER_WORKER``.
- ``ml``: one node; each ML worker gets one of the node's four A100 GPUs (TensorFlow sees only its GPU).

Copy this file, edit the constants below in the copy (at least ``ACCOUNT`` and ``ENV_ACTIVATION``) and pass
it with ``python run.py --config path/to/copy.py``; nothing is submitted until Parsl loads the configuration
inside the task server. To run everything inside one PBS job instead, see ``config/polaris_allocation.py``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Sequence

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import MpiExecLauncher, SimpleLauncher
from parsl.providers import PBSProProvider

from config import _common
from config._common import pinned_cores, worker_address, worker_init

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- edit these
ACCOUNT = 'YOUR_PROJECT'
"""ALCF project charged for the node hours (``#PBS -A``): change to your allocation"""
QUEUE = 'debug'
"""Queue of both jobs: 'debug' (1-2 nodes, short tests), 'debug-scaling', 'prod' (production, 10+ nodes),
'preemptable'. Check the queue's limits: in a queue that runs one job per user, the ``ml`` job waits until
the ``qc`` job ends, and the steering stalls -- use a queue that runs two jobs at once"""
NODES = 1
"""Nodes of the QC job"""
WALLTIME = '01:00:00'
"""Wall time of each job (HH:MM:SS). When a job ends, Parsl submits a new one if tasks are waiting;
to continue a run after the thinker itself stopped use ``python run.py --restart runs/<name>``"""
FILESYSTEMS = 'home:eagle'
"""File systems the jobs need (``#PBS -l filesystems=``): those holding the environment and the repository"""
ENV_ACTIVATION = 'module use /soft/modulefiles; module load conda; conda activate moldesign'
"""Shell commands that activate, on a compute node, the environment in which moldesign is installed
(e.g. ``conda activate /lus/eagle/projects/<project>/envs/moldesign`` for an environment outside $HOME).
The job stops with a ``moldesign:`` line in its stderr if they fail or leave ``process_worker_pool.py`` off PATH"""
QC_THREADS_PER_WORKER = 4
"""OpenMP threads (and physical cores) of one QC task: 1 for GFN2-xTB (``--qc xtb``), 4-8 for DFT with
psi4 or PySCF. Workers per node = CORES_PER_NODE // QC_THREADS_PER_WORKER"""
PIN_QC_WORKERS = True
"""Pin each QC worker to its own physical cores (assumes CPUs 0-31 are the 32 distinct cores and 32-63
their hyperthreads, as ``lscpu -e`` shows on Polaris); False leaves placement to the OS"""
ML_GPUS = 4
"""GPUs of the ML node that ML workers may use, one each (0: run TensorFlow on the CPU). The ML job asks for
as many as there are ML workers (``ngpus``), at most ML_GPUS"""
# ---------------------------------------------------------------- Polaris facts
CORES_PER_NODE = 32
"""Physical cores of a Polaris node (AMD EPYC Milan; 64 hardware threads)"""
HW_THREADS_PER_NODE = 64
INTERFACE = 'bond0'
"""Network interface of the login and compute nodes over which workers reach the thinker's host"""
ADDRESS = None
"""Address the workers connect to, used as given (overrides INTERFACE); None: INTERFACE's address, else the
host name's (never a loopback address)"""
HEARTBEAT_PERIOD = 30
"""Seconds between heartbeats of workers and the thinker's host; a worker is declared lost after 4 missed"""


def qc_workers_per_node() -> int:
    """QC workers on one node: one per ``QC_THREADS_PER_WORKER`` physical cores (at least one)"""
    return max(1, CORES_PER_NODE // QC_THREADS_PER_WORKER)


def default_qc_workers() -> int:
    """QC tasks kept in flight by default: every QC worker of the job busy"""
    return NODES * qc_workers_per_node()


def make_config(run_dir: Path, qc_workers: int, ml_workers: int = 1) -> Config:
    """Build the Parsl configuration (submits nothing)

    Args:
        run_dir: Run directory (Parsl writes its logs and job scripts to ``run_dir/parsl``)
        qc_workers: QC tasks the thinker keeps in flight; the job runs ``NODES x`` :func:`qc_workers_per_node`
            workers whatever this number (a smaller number leaves workers idle, a larger one queues tasks)
        ml_workers: ML workers on the ML node (at most ``ML_GPUS`` when GPUs are used), one GPU each
    Returns:
        Parsl configuration with executors ``qc`` and ``ml``
    Raises:
        ValueError: bad worker counts, or a loopback worker address (off Polaris: set ADDRESS)
    """
    if qc_workers < 1 or ml_workers < 1:
        raise ValueError(f'Need at least one QC and one ML worker, got qc_workers={qc_workers}, '
                         f'ml_workers={ml_workers}')
    if qc_workers != default_qc_workers():
        logger.info(f'{qc_workers} QC tasks in flight for {default_qc_workers()} QC workers '
                    f'({NODES} node(s) x {qc_workers_per_node()})')
    address = worker_address(__file__, ADDRESS, INTERFACE, interface_required=False)
    gpus = _common.gpus_per_ml_job(ml_workers, ML_GPUS, __file__)
    heartbeat = dict(heartbeat_period=HEARTBEAT_PERIOD, heartbeat_threshold=4 * HEARTBEAT_PERIOD)
    scheduler_options = f'#PBS -l filesystems={FILESYSTEMS}\n#PBS -l place=scatter'
    per_node = qc_workers_per_node()
    ml_threads = max(1, CORES_PER_NODE // ml_workers)

    qc = HighThroughputExecutor(
        label='qc',
        address=address,
        encrypted=True,  # CurveZMQ between the thinker's host and the workers
        max_workers_per_node=per_node,
        cores_per_worker=HW_THREADS_PER_NODE // per_node,  # Parsl counts hardware threads
        cpu_affinity=pinned_cores(per_node, QC_THREADS_PER_WORKER) if PIN_QC_WORKERS else 'none',
        prefetch_capacity=per_node,  # Room for the thinker's prefetched tasks (run.py --qc-prefetch): one per worker
        **heartbeat,
        provider=PBSProProvider(
            account=ACCOUNT,
            queue=QUEUE,
            walltime=WALLTIME,
            nodes_per_block=NODES,
            cpus_per_node=HW_THREADS_PER_NODE,
            scheduler_options=scheduler_options,
            worker_init=worker_init(ENV_ACTIVATION, __file__, QC_THREADS_PER_WORKER),
            # One worker manager per node; it starts the node's workers (mpiexec is Cray MPICH's on Polaris)
            launcher=MpiExecLauncher(bind_cmd='--cpu-bind', overrides='--depth=64 --ppn 1'),
            init_blocks=1, min_blocks=1, max_blocks=1,
        ),
    )
    ml = HighThroughputExecutor(
        label='ml',
        address=address,
        encrypted=True,
        max_workers_per_node=ml_workers,
        cores_per_worker=max(1, HW_THREADS_PER_NODE // ml_workers),
        available_accelerators=gpus if gpus else (),  # Sets CUDA_VISIBLE_DEVICES per worker
        prefetch_capacity=0,
        **heartbeat,
        provider=PBSProProvider(
            account=ACCOUNT,
            queue=QUEUE,
            walltime=WALLTIME,
            nodes_per_block=1,
            cpus_per_node=HW_THREADS_PER_NODE,
            select_options=f'ngpus={gpus}' if gpus else '',  # The GPUs the ML workers use, one each
            scheduler_options=scheduler_options,
            worker_init=worker_init(ENV_ACTIVATION, __file__, ml_threads),
            launcher=SimpleLauncher(),  # One node: the manager runs on the job's node itself
            init_blocks=1, min_blocks=1, max_blocks=1,
        ),
    )
    return Config(
        executors=[qc, ml],
        run_dir=str(Path(run_dir) / 'parsl'),
        retries=1,  # Re-run a task once if its worker died (failed QC is returned by Colmena, not retried)
        strategy='simple',  # Submit a new job when one ends (wall time) while tasks wait; never more than one
        strategy_period=1,  # Seconds between checks of the blocks: a job the scheduler refuses is reported at once
    )


def diagnose(run_dir: Path, job_ids: Sequence[str]) -> List[str]:
    """Why the workers have not started yet (printed by run.py when an executor stays silent): the jobs' own
    failure lines; ``qstat -f <job id>`` tells the rest"""
    return _common.startup_errors(run_dir) or [f'check the jobs with: qstat -f {" ".join(job_ids)}' if job_ids
                                               else 'no job was submitted yet']
