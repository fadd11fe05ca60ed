"""Local machine (laptop, workstation, CI): two HighThroughputExecutors on the loopback interface.

- ``qc``: one worker per available core but one (at least one), each single-threaded (OMP_NUM_THREADS=1);
  one task may wait at each worker (the thinker prefetches), so a worker never idles between molecules.
- ``ml``: one worker (MolDQN and screening), also single-threaded and at nice 10, so it does not steal
  the CPU from QC and from Parsl's processes that carry QC results (utilization 0.96-0.99 with it,
  0.88-0.95 without, on 2 cores).
"""
from __future__ import annotations

import os
from pathlib import Path

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

# Environment of every worker: one thread per worker (QC codes and TensorFlow honour these)
WORKER_INIT = ('export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 '
               'TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2')


ML_WORKER_INIT = WORKER_INIT + '; renice -n 10 -p $$ >/dev/null 2>&1 || true'
"""The ML worker runs at a lower CPU priority: when it shares cores with QC, the QC worker and Parsl's
processes that carry QC tasks and results to and from it come first"""


def default_qc_workers() -> int:
    """One QC worker per available core, keeping one core for the thinker and the ML worker"""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 2)
    return max(1, cores - 1)


def make_config(run_dir: Path, qc_workers: int, ml_workers: int = 1) -> Config:
    """Build the Parsl configuration

    Args:
        run_dir: Run directory (Parsl writes its logs to ``run_dir/parsl``)
        qc_workers: Number of QC workers
        ml_workers: Number of ML workers
    Returns:
        Parsl configuration with executors ``qc`` and ``ml``
    """
    def _executor(label: str, workers: int, prefetch: int, worker_init: str) -> HighThroughputExecutor:
        return HighThroughputExecutor(
            label=label,
            address='127.0.0.1',
            max_workers_per_node=workers,
            prefetch_capacity=prefetch,
            cores_per_worker=1e-6,  # Count workers, not cores: the ML worker shares the machine with QC
            heartbeat_period=10,
            heartbeat_threshold=60,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1, worker_init=worker_init),
        )

    return Config(
        # QC: room for the thinker's prefetched tasks (run.py --qc-prefetch), one waiting per worker
        executors=[_executor('qc', qc_workers, qc_workers, WORKER_INIT),
                   _executor('ml', ml_workers, 0, ML_WORKER_INIT)],
        run_dir=str(Path(run_dir) / 'parsl'),
        retries=1,  # Re-run a task once if its worker died (failed QC is returned by Colmena, not retried)
        strategy='none',
    )
