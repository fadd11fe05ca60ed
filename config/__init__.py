"""Parsl configurations, one module per machine and layout.

Each module provides ``make_config(run_dir, qc_workers, ml_workers) -> parsl.Config`` with two
executors labelled ``qc`` (quantum chemistry) and ``ml`` (RL generation and screening).
``python run.py --config NAME`` uses ``config/NAME.py``; ``--config path/to/copy.py`` a copy with edited
constants. ``local``: this machine; ``slurm``, ``polaris``: Parsl submits one job per executor;
``slurm_allocation``, ``polaris_allocation``: ``run.py`` runs inside one job and splits its nodes.
``_common.py`` holds what the cluster configurations share (not a configuration itself).
"""
