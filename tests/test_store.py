"""The run directory (moldesign.store) and the run's parameters (moldesign.steer.params)"""
import json
import os
import subprocess
import sys

import pytest

from moldesign.steer.params import RunParams
from moldesign.store import (AGENT, SIMULATION_RECORDS, DiskFullError, RunFileError, RunLocked, RunStore,
                             load_agent, load_run, read_jsonl, repair_jsonl)


def test_append_and_read_back(tmp_path):
    store = RunStore(tmp_path / 'run')
    store.append(SIMULATION_RECORDS, {'smiles': 'CCO', 'value': float('nan')})
    store.append(SIMULATION_RECORDS, {'smiles': 'CC'}, sync=False)
    store.sync()
    store.close()
    lines = (tmp_path / 'run' / SIMULATION_RECORDS).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{'smiles': 'CCO', 'value': None}, {'smiles': 'CC'}]  # Strict JSON


def test_a_sync_returns_only_when_the_records_before_it_are_on_disk(tmp_path, monkeypatch):
    """Two threads syncing: the second waits for the first's disk sync, which holds its record"""
    import threading
    import moldesign.store.writer as writer
    store = RunStore(tmp_path / 'run')
    entered, release, synced = threading.Event(), threading.Event(), []
    real_fsync = os.fsync

    def slow_fsync(fd):
        entered.set()
        release.wait(30)
        real_fsync(fd)
        synced.append(fd)
    monkeypatch.setattr(writer.os, 'fsync', slow_fsync)
    store.append(SIMULATION_RECORDS, {'smiles': 'CC'}, sync=False)
    first = threading.Thread(target=store.sync)
    first.start()
    assert entered.wait(30)
    second = threading.Thread(target=store.sync)
    second.start()
    second.join(0.5)
    assert second.is_alive() and not synced  # It waits: its record is in the first's sync
    release.set()
    first.join(30)
    second.join(30)
    assert len(synced) == 1
    store.close()


def test_one_process_per_run_directory(tmp_path):
    store = RunStore(tmp_path / 'run')
    code = ('import sys; from moldesign.store import RunStore, RunLocked\n'
            'try:\n    RunStore(sys.argv[1])\nexcept RunLocked as exc:\n    print(exc); sys.exit(3)\n')
    other = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'run')], capture_output=True, text=True)
    assert other.returncode == 3, other.stderr
    assert f'process {os.getpid()}' in other.stdout and 'in use' in other.stdout
    store.close()
    other = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'run')], capture_output=True, text=True)
    assert other.returncode == 0, other.stdout + other.stderr  # Free again once closed
    with pytest.raises(RunLocked):  # The lock is per open file: a second store in one process is refused too
        first = RunStore(tmp_path / 'run2')
        try:
            RunStore(tmp_path / 'run2')
        finally:
            first.close()


def test_a_cut_last_line_is_moved_aside_before_appending(tmp_path):
    path = tmp_path / SIMULATION_RECORDS
    path.write_text('{"smiles": "CCO"}\n{"smiles": "C')  # The process died mid-write
    assert read_jsonl(path) == ([{'smiles': 'CCO'}], 1)
    aside = repair_jsonl(path)
    assert aside.read_text() == '{"smiles": "C' and path.read_text() == '{"smiles": "CCO"}\n'
    assert repair_jsonl(path) is None  # Intact now
    store = RunStore(tmp_path)
    store.append(SIMULATION_RECORDS, {'smiles': 'CC'})
    store.close()
    assert read_jsonl(path) == ([{'smiles': 'CCO'}, {'smiles': 'CC'}], 0)


def test_repair_of_a_file_that_is_only_a_cut_line(tmp_path):
    path = tmp_path / SIMULATION_RECORDS
    path.write_text('{"smil')
    assert repair_jsonl(path) is not None and path.read_text() == ''


def test_disk_full_is_reported_and_the_file_stays_whole(tmp_path):
    if not os.path.exists('/dev/full'):
        pytest.skip('no /dev/full on this system')
    run_dir = tmp_path / 'run'
    store = RunStore(run_dir)
    (run_dir / SIMULATION_RECORDS).symlink_to('/dev/full')  # Every write fails with ENOSPC
    with pytest.raises(DiskFullError, match='No space left'):
        store.append(SIMULATION_RECORDS, {'smiles': 'CCO'})
    assert store.disk_full
    with pytest.raises(DiskFullError):  # And stays refused: nothing half-written after the first failure
        store.append('other.jsonld', {'smiles': 'CC'})
    store.close()


def test_agent_checkpoint(tmp_path):
    store = RunStore(tmp_path)
    assert load_agent(tmp_path) is None
    store.save_agent({'weights': [1, 2, 3]})
    assert load_agent(tmp_path) == {'weights': [1, 2, 3]}
    (tmp_path / AGENT).write_bytes((tmp_path / AGENT).read_bytes()[:10])  # Truncated
    with pytest.raises(RunFileError, match=AGENT):
        load_agent(tmp_path)
    store.close()


def test_load_run_strict_names_the_bad_file(tmp_path):
    (tmp_path / 'run_params.json').write_text('{not json')
    assert load_run(tmp_path).run_params == {}  # The report tolerates it
    with pytest.raises(RunFileError, match='run_params.json'):
        load_run(tmp_path, strict=True)


def test_run_params_round_trip_and_validation(tmp_path):
    params = RunParams(objective='atomization_energy_per_atom', search_size=5, qc_workers=3, sources=['neighbours'])
    params.save(tmp_path)
    assert RunParams.load(tmp_path) == params
    data = json.loads((tmp_path / 'run_params.json').read_text())
    data['parallel_guesses'] = data.pop('qc_workers')  # The original application's name is read too
    data['from_the_future'] = 1
    (tmp_path / 'run_params.json').write_text(json.dumps(data))
    assert RunParams.load(tmp_path).qc_workers == 3
    (tmp_path / 'run_params.json').write_text(json.dumps({'search_size': -1}))
    with pytest.raises(RunFileError, match='search_size'):
        RunParams.load(tmp_path)
    with pytest.raises(ValueError):
        RunParams(sources=[])
