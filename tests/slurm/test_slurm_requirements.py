"""When the Slurm tests run, skip, or fail: decided without starting the cluster (runs on any machine)."""
from __future__ import annotations

import pytest

from cluster import PACKAGES, missing_requirements
from conftest import require_slurm


def test_missing_requirements_name_the_cause():
    assert 'needs root' in missing_requirements(euid=1000)
    reason = missing_requirements(euid=0, search_path='/nonexistent', sbin_dirs=())
    assert reason.startswith('Slurm/munge programs not installed: slurmctld, slurmd, sbatch')
    assert f'apt-get install {" ".join(PACKAGES)}' in reason and 'make system-deps' in reason


def test_skip_outside_ci_fail_in_ci():
    require_slurm(None, environ={'CI': '1'})  # Nothing missing: nothing happens
    with pytest.raises(pytest.skip.Exception, match='needs root'):
        require_slurm('emulated Slurm needs root', environ={})
    with pytest.raises(pytest.fail.Exception, match='CI is set, but the Slurm tests cannot run here: .*needs root'):
        require_slurm('emulated Slurm needs root', environ={'CI': 'true'})
