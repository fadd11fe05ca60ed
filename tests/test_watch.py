"""The console warning about workers that never start (moldesign.steer.watch), on hand-made Parsl logs"""
import types

from moldesign.steer.watch import BlockWatch, block_jobs

LOG = """2026-12-01 22:55:05 parsl.executors.status_handling DEBUG [Scaling executor qc] Launched block 0 with job ID 41
2026-12-01 22:55:05 parsl.executors.status_handling DEBUG [Scaling executor ml] Launched block 0 with job ID 42
2026-12-01 23:55:05 parsl.executors.status_handling DEBUG [Scaling executor qc] Launched block 1 with job ID 57
"""


def test_block_jobs_from_parsl_log(tmp_path):
    (tmp_path / 'parsl' / '000').mkdir(parents=True)
    (tmp_path / 'parsl' / '000' / 'parsl.log').write_text(LOG)
    assert block_jobs(tmp_path) == {'qc': ['41', '57'], 'ml': ['42']}
    assert block_jobs(tmp_path / 'nothing') == {}


def test_watch_warns_once_per_silent_executor_with_the_diagnosis(tmp_path, caplog):
    (tmp_path / 'parsl' / '000').mkdir(parents=True)
    (tmp_path / 'parsl' / '000' / 'parsl.log').write_text(LOG)
    asked = []
    config = types.SimpleNamespace(diagnose=lambda run_dir, ids: asked.append(ids) or [f'job {ids[0]} is PENDING'])
    first = {'qc': 1.0, 'ml': None}
    watch = BlockWatch(tmp_path, config, lambda: first, after=60, repeat=300)
    assert watch.check(now=watch.start + 30) == []  # Not yet
    lines = watch.check(now=watch.start + 61)
    assert len(lines) == 1 and 'ml workers after 61 s (batch job 42): job 42 is PENDING' in lines[0]
    assert asked == [['42']]
    assert watch.check(now=watch.start + 120) == []  # Not again before `repeat`
    assert len(watch.check(now=watch.start + 400)) == 1
    first['ml'] = 2.0
    assert watch.check(now=watch.start + 800) == []  # It answered
    assert BlockWatch(tmp_path, None, lambda: {'qc': None}, after=0).check(now=1e9) == []  # Disabled


def test_a_failing_diagnosis_does_not_end_the_run(tmp_path):
    def broken(run_dir, ids):
        raise OSError('squeue: command not found')
    watch = BlockWatch(tmp_path, types.SimpleNamespace(diagnose=broken), lambda: {'qc': None}, after=1)
    lines = watch.check(now=watch.start + 2)
    assert 'could not ask the scheduler' in lines[0] and 'squeue' in lines[0]
