"""Parsl configurations, one module per machine.

Each module provides ``make_config(run_dir, qc_workers, ml_workers) -> parsl.Config`` with two
executors labelled ``qc`` (quantum chemistry) and ``ml`` (RL generation and screening).
``python run.py --config NAME`` uses ``config/NAME.py``.
"""
