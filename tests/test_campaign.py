"""Campaigns run from Python (no subprocess): assembly, a complete run, and a restart that continues it.

Real Parsl HighThroughputExecutor workers (config/local.py), real GFN2-xTB, real MolDQN.
"""
import json

import pytest

from moldesign.steer.campaign import Campaign
from moldesign.steer.checks import UsageError
from moldesign.steer.params import RunParams, SessionOptions
from moldesign.store import load_agent, load_run

QUIET = SessionOptions(quiet=True, report=False, shutdown_timeout=30)


@pytest.mark.slow
def test_campaign_from_python_then_restart_restores_the_agent(tmp_path, capsys):
    # MolDQN as the only source: the first part cannot end before a MolDQN call returned an agent to save
    params = RunParams(initial_count=4, search_size=3, rl_episodes=2, qc_workers=1, qc_prefetch=1, sources=['moldqn'])
    campaign = Campaign.create(params, tmp_path / 'runs', QUIET)
    assert campaign.run() == 0
    run_dir = campaign.run_dir
    first = load_run(run_dir)
    assert first.summary['complete'] and first.summary['evaluated_steered'] == 3
    assert 'Best molecules' in capsys.readouterr().out
    agent = load_agent(run_dir)
    assert agent is not None and agent.episodes_done > 0

    restarted = Campaign.restart(run_dir, QUIET, search_size=8)
    assert restarted.params.search_size == 8 and restarted.params.config == 'local'
    assert restarted.params.sources == ['moldqn']
    assert restarted.run() == 0
    after = load_run(run_dir)
    steered = [r for r in after.molecule_records if r['phase'] == 'steered']
    assert len(steered) == 8 and len({r['smiles'] for r in after.molecule_records}) == len(after.molecule_records)
    assert after.molecule_records[:len(first.molecule_records)] == first.molecule_records
    log = (run_dir / 'runtime.log').read_text()
    assert 'Restored the MolDQN agent' in log
    assert load_agent(run_dir).episodes_done >= agent.episodes_done  # It went on from the saved one
    assert json.loads((run_dir / 'run_params.json').read_text())['search_size'] == 8


def test_bad_inputs_are_refused_before_anything_is_created(tmp_path):
    out = tmp_path / 'runs'
    cases = [
        (RunParams(qc='pyscf/nosuchmethod/sto-3g'), '--qc: PySCF does not know the method'),
        (RunParams(qc='pyscf/hf/nosuchbasis'), '--qc: PySCF has no basis set'),
        (RunParams(config='no-such-machine'), '--config: no configuration'),
        (RunParams(verify_qc='pyscf/b3lyp/nosuch', verify_top=2), '--verify-qc'),
    ]
    for params, message in cases:
        with pytest.raises(UsageError, match=message):
            Campaign.create(params, out, QUIET, initial_smiles=['CCO', 'CC'])
    assert not out.exists() or not any(out.iterdir())
    (tmp_path / 'a-file').write_text('x')
    with pytest.raises(UsageError, match='--out-dir: .* is not a directory'):
        Campaign.create(RunParams(), tmp_path / 'a-file', QUIET, initial_smiles=['CCO', 'CC'])
    with pytest.raises(UsageError, match='--restart: .* is not a run directory'):
        Campaign.restart(tmp_path, QUIET)


@pytest.mark.slow
def test_monitor_records_parsl_monitoring_database(tmp_path):
    """--monitor: Parsl's monitoring database in the run directory, with the run's tasks in it"""
    import sqlite3
    params = RunParams(initial_count=2, search_size=0, qc_workers=1, qc_prefetch=0, monitor=True)
    campaign = Campaign.create(params, tmp_path / 'runs', QUIET)
    assert campaign.run() == 0
    database = campaign.run_dir / 'monitoring.db'
    assert database.is_file()
    with sqlite3.connect(database) as db:
        apps = {name for (name,) in db.execute('SELECT task_func_name FROM task')}
    assert {'compute_reference_energy', 'compute_atomization_energy'} <= apps
