"""Fixtures of the Slurm tests: one real Slurm cluster of 3 emulated nodes for the whole session.

The tests here are skipped only where this machine cannot run Slurm (:func:`cluster.missing_requirements`:
not Linux, not root, or Debian's ``slurmctld slurmd slurm-client munge`` not installed; ``make system-deps``
installs them as root). When the environment variable ``CI`` is set (``.ci/run`` sets it), such a skip
is a failure instead: CI must run them.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Mapping, Optional

import pytest

from cluster import SlurmCluster, missing_requirements

logger = logging.getLogger(__name__)

NODES = 3
CPUS_PER_NODE = 2
TIMINGS = {}
"""Wall times of the cluster's start and stop (s), reported at the end of the session"""


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.slurm)


def require_slurm(reason: Optional[str], environ: Mapping[str, str] = os.environ) -> None:
    """Skip the calling test if this machine cannot run Slurm (``reason``); fail it instead when ``CI`` is set"""
    if not reason:
        return
    if environ.get('CI'):
        pytest.fail(f'CI is set, but the Slurm tests cannot run here: {reason}', pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope='session')
def slurm_cluster(tmp_path_factory):
    """The running cluster (started once, stopped at the end of the session)"""
    require_slurm(missing_requirements())
    cluster = SlurmCluster(tmp_path_factory.mktemp('slurm'), nodes=NODES, cpus_per_node=CPUS_PER_NODE)
    start = time.monotonic()
    try:
        cluster.start()
    except RuntimeError:
        cluster.stop()
        raise
    TIMINGS['start'] = time.monotonic() - start
    try:
        yield cluster
    finally:
        start = time.monotonic()
        cluster.stop()
        TIMINGS['stop'] = time.monotonic() - start


@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    """The cluster, with ``SLURM_CONF`` set for this test; jobs a test left behind are cancelled after it"""
    monkeypatch.setenv('SLURM_CONF', str(slurm_cluster.conf))
    yield slurm_cluster
    left = slurm_cluster.jobs()
    if left:
        logger.warning(f'Cancelling jobs left by the test: {left}')
        slurm_cluster.cancel_all()


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_line('Slurm cluster: ' + ', '.join(f'{k} {v:.1f} s' for k, v in TIMINGS.items()))
