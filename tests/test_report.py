"""Tests of moldesign.report: run-directory parsing, top table, utilization, figures, report, progress"""
import io
import json
import logging
import math
import re
from pathlib import Path

import pytest
from PIL import Image

from moldesign.report.__main__ import main
from moldesign.report.progress import ProgressReporter, ProgressState
from moldesign.report.report import (format_top_table, load_run, model_quality, qc_utilization, top_molecules,
                                     write_report)

T0 = 1_700_000_000.0


def _worker(rank: int, pool: str = 'pool-a') -> dict:
    return {'hostname': 'node1', 'PARSL_WORKER_RANK': str(rank), 'PARSL_WORKER_POOL_ID': pool,
            'PARSL_WORKER_COUNT': '2'}


def _timestamp(start, end) -> dict:
    created = None if start is None else T0 + start - 1
    return {'created': created, 'input_received': created, 'start_task_submission': created,
            'compute_started': None if start is None else T0 + start,
            'compute_ended': None if end is None else T0 + end,
            'result_sent': None if end is None else T0 + end + 0.01,
            'result_received': None if end is None else T0 + end + 0.02,
            'task_received': created}


def _time() -> dict:
    return {'running': 1.0, 'serialize_inputs': 1e-4, 'deserialize_inputs': 1e-4,
            'serialize_results': 1e-4, 'deserialize_results': 1e-4}


def _molecule(task_id, smiles, energy, phase, evaluation, start, end, rank_worker, batch=None, rank=None,
              predicted=None, predicted_std=None, success=True):
    n_atoms = 5
    value = None
    failure = None
    if success:
        value = {'smiles': smiles, 'formula': 'CxHy', 'n_atoms': n_atoms, 'n_heavy_atoms': 2,
                 'total_energy': -10.0, 'atomization_energy': energy,
                 'atomization_energy_hartree': energy / 627.5094740631,
                 'atomization_energy_per_atom': energy / n_atoms,
                 'xyz': '1\n\nC 0 0 0\n', 'n_steps': 7, 'qc_spec': 'xtb', 'program': 'xtb',
                 'method': 'gfn2-xtb', 'basis': None, 'program_version': '0.8.0',
                 'walltime': 1.0 if start is None else end - start}
    else:
        failure = {'exception': 'QCFailure("RDKit could not embed C1CC1")', 'traceback': 'Traceback ...'}
    return {'task_id': task_id, 'method': 'compute_atomization_energy', 'success': success, 'smiles': smiles,
            'element': None, 'phase': phase, 'evaluation': evaluation, 'batch': batch, 'rank': rank,
            'predicted': predicted, 'predicted_std': predicted_std,
            'objective': energy if success else None, 'value': value, 'failure_info': failure,
            'task_info': {'smiles': smiles, 'phase': phase}, 'timestamp': _timestamp(start, end), 'time': _time(),
            'worker_info': None if start is None else _worker(rank_worker)}


def _reference(task_id, element, energy, start, end):
    return {'task_id': task_id, 'method': 'compute_reference_energy', 'success': True, 'smiles': None,
            'element': element, 'phase': 'reference', 'evaluation': None, 'batch': None, 'rank': None,
            'predicted': None, 'predicted_std': None, 'objective': None,
            'value': {'element': element, 'energy': energy}, 'failure_info': None, 'task_info': {'element': element},
            'timestamp': _timestamp(start, end), 'time': _time(), 'worker_info': _worker(0)}


def _ml(task_id, method, batch, start, end, **extra):
    return {'task_id': task_id, 'method': method, 'success': True, 'batch': batch, 'timestamp': _timestamp(start, end),
            'time': _time(), 'worker_info': _worker(0, pool='pool-ml'), 'failure_info': None,
            'task_info': {'batch': batch}, **extra}


# Steered-phase QC intervals (seconds after T0) on 2 slots: window [100, 120], busy 10 + 5 + 10 + 10 = 35
STEERED_UTILIZATION = 35 / (2 * 20)


def _simulation_records():
    return [
        _reference('r-H', 'H', -0.39, 0, 1, ), _reference('r-C', 'C', -1.79, 1, 2), _reference('r-O', 'O', -3.9, 2, 3),
        _molecule('m1', 'CCO', -700.0, 'initial', 1, 10, 20, 0),
        _molecule('m2', 'C', -400.0, 'initial', 2, 10, 15, 1),
        _molecule('m3', 'CC#N', None, 'initial', 3, 15, 16, 1, success=False),
        _molecule('m4', 'CCC', -900.0, 'initial', 4, 90, 101, 1),  # Overlaps the steered window: not counted
        _molecule('m5', 'CCCC', -1200.0, 'steered', 5, 100, 110, 0, batch=1, rank=1, predicted=-1000.,
                  predicted_std=20.),
        _molecule('m6', 'OCCO', -750.0, 'steered', 6, 100, 105, 1, batch=1, rank=2, predicted=-800., predicted_std=30.),
        _molecule('m7', 'CCCCC', -1500.0, 'steered', 7, 110, 120, 0, batch=2, rank=1, predicted=-1300.,
                  predicted_std=25.),
        _molecule('m8', 'C1CC1', None, 'steered', 8, 105, 115, 1, batch=2, rank=2, predicted=-900., success=False),
        _molecule('m9', 'CCO', -700.0, 'steered', 9, None, None, 0, batch=2, rank=3, predicted=-650.),  # No times
    ]


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    """A hand-made interrupted run: no summary.json, a truncated last line in the QC records"""
    run = tmp_path / 'runs' / '20250101T000000-abc123'
    run.mkdir(parents=True)
    params = {'objective': 'atomization_energy', 'search_size': 12, 'initial_count': 4, 'parallel_guesses': 2,
              'qc': 'xtb', 'seed': 1, 'config': 'local'}
    (run / 'run_params.json').write_text(json.dumps(params))
    (run / 'qc_spec.json').write_text(json.dumps({'name': 'xtb', 'program': 'xtb', 'method': 'gfn2-xtb',
                                                  'basis': None, 'keywords': {}, 'relax': True}))
    (run / 'reference_energies.json').write_text(json.dumps({'xtb': {'H': -0.39, 'C': -1.79, 'O': -3.9}}))
    lines = [json.dumps(r) for r in _simulation_records()]
    truncated = json.dumps(_molecule('m10', 'CCCCCC', -9999.0, 'steered', 10, 120, 130, 1, batch=3, rank=1))[:150]
    (run / 'simulation_records.jsonld').write_text('\n'.join(lines) + '\n' + truncated)
    rl = [_ml('g1', 'generate_molecules', 1, 30, 60, n_candidates=200),
          _ml('g2', 'generate_molecules', 2, 101, 108, n_candidates=180)]
    (run / 'rl_records.jsonld').write_text(''.join(json.dumps(r) + '\n' for r in rl))
    screening = [_ml('s1', 'compute_score', 1, 60, 70, n_selected=2, n_train=4,
                     selected=[{'smiles': 'CCCC', 'predicted': -1000., 'predicted_std': 20., 'rank': 1}])]
    (run / 'screening_records.jsonld').write_text(''.join(json.dumps(r) + '\n' for r in screening))
    return run


def test_load_run_tolerates_truncation_and_missing_files(run_dir):
    run = load_run(run_dir)
    assert not run.finished
    assert run.skipped_lines == {'simulation_records.jsonld': 1}
    assert len(run.simulation) == 12 and len(run.rl) == 2 and len(run.screening) == 1
    assert [r['evaluation'] for r in run.molecule_records] == list(range(1, 10))
    assert run.objective == 'atomization_energy' and run.qc_workers == 2

    (run_dir / 'rl_records.jsonld').unlink()
    assert load_run(run_dir).rl == []
    with pytest.raises(FileNotFoundError, match='Run directory not found'):
        load_run(run_dir / 'nope')


def test_top_molecules_order_and_fields(run_dir):
    qm9 = {'CCO': -701.5, 'CCC': -905.0}
    rows = top_molecules(load_run(run_dir), n=10, qm9_lookup=qm9.get)
    assert [r['smiles'] for r in rows] == ['CCCCC', 'CCCC', 'CCC', 'OCCO', 'CCO', 'C']  # CCO once, failures out
    assert [r['rank'] for r in rows] == [1, 2, 3, 4, 5, 6]
    first = rows[0]
    assert first['objective'] == -1500.0 and first['atomization_energy'] == -1500.0
    assert first['evaluation'] == 7 and first['phase'] == 'steered' and first['batch'] == 2
    assert first['in_qm9'] is False and first['qm9_atomization_energy'] is None
    cco = rows[4]
    assert cco['evaluation'] == 1  # First found in the initial population, repeated at evaluation 9
    assert cco['in_qm9'] is True and cco['qm9_atomization_energy'] == -701.5
    assert len(top_molecules(run_dir, n=2, qm9_lookup=False)) == 2
    assert top_molecules(run_dir, n=1, qm9_lookup=False)[0]['in_qm9'] is None

    table = format_top_table(rows, 'atomization_energy')
    lines = table.splitlines()
    assert len(lines) == 2 + 6
    assert lines[2].split() == ['1', 'CCCCC', '-1500.0', '7', 'steered', 'no', '-']
    assert lines[6].split() == ['5', 'CCO', '-700.0', '1', 'initial', 'yes', '-701.5']
    assert 'atomization_energy (kcal/mol)' in lines[0]
    assert format_top_table([]) == 'No successful QC evaluation yet.'


def test_top_molecules_per_atom_objective(run_dir):
    params = json.loads((run_dir / 'run_params.json').read_text())
    params['objective'] = 'atomization_energy_per_atom'
    (run_dir / 'run_params.json').write_text(json.dumps(params))
    lines = [json.loads(x) for x in (run_dir / 'simulation_records.jsonld').read_text().splitlines()[:-1]]
    for record in lines:  # The objective field now holds the per-atom value
        if record['success'] and record['value'].get('atomization_energy_per_atom') is not None:
            record['objective'] = record['value']['atomization_energy_per_atom']
    (run_dir / 'simulation_records.jsonld').write_text(''.join(json.dumps(r) + '\n' for r in lines))
    rows = top_molecules(run_dir, n=3, qm9_lookup=False)
    assert [r['objective'] for r in rows] == [-300.0, -240.0, -180.0]
    assert rows[0]['atomization_energy'] == -1500.0
    table = format_top_table(rows, 'atomization_energy_per_atom').splitlines()
    assert format_top_table(rows).splitlines() == table  # The rows name their objective
    assert 'atomization_energy_per_atom (kcal/mol per atom)' in table[0]
    assert table[2].split() == ['1', 'CCCCC', '-300.0', '-1500.0', '7', 'steered', '?', '-']


def test_top_molecules_with_qm9(run_dir):
    """The default look-up is moldesign.qm9 (QM9's B3LYP atomization energies)"""
    pytest.importorskip('moldesign.qm9')
    rows = {r['smiles']: r for r in top_molecules(run_dir)}
    assert rows['CCO']['in_qm9'] is True
    assert rows['CCO']['qm9_atomization_energy'] == pytest.approx(-761.15, abs=0.1)
    assert all(r['in_qm9'] is True for r in rows.values())  # Small alkanes, ethanol, ethylene glycol, methane


def test_qc_utilization_exact(run_dir):
    records = load_run(run_dir).simulation
    assert qc_utilization(records, 2) == pytest.approx(STEERED_UTILIZATION)
    # Initial phase: intervals [10,20], [10,15], [15,16], [90,101] in window [10, 101] on 2 slots
    assert qc_utilization(records, 2, phase='initial') == pytest.approx((10 + 5 + 1 + 11) / (2 * 91))
    # An explicit window clips the intervals: [100, 110] holds 10 + 5 + 5 (m8 from 105) = 20 of 20 slot-seconds
    assert qc_utilization(records, 2, start=T0 + 100, end=T0 + 110) == pytest.approx(1.0)
    assert math.isnan(qc_utilization([], 2))
    with pytest.raises(ValueError, match='qc_workers'):
        qc_utilization(records, 0)


def test_qc_utilization_restarted_run(run_dir):
    """The downtime between two sessions (new worker pools after an idle gap) is not available slot time"""
    records = load_run(run_dir).simulation
    restarted = [_molecule(f'n{i}', 'CCCCCC', -1800.0, 'steered', 10 + i, 1000, 1010, i, batch=3, rank=i)
                 for i in range(2)]
    for record in restarted:
        record['worker_info']['PARSL_WORKER_POOL_ID'] = 'pool-b'
    assert qc_utilization(records + restarted, 2) == pytest.approx((35 + 20) / (2 * (20 + 10)))
    # The same pools after an idle gap: one session, the gap counts as idle time
    idle = [_molecule('n9', 'CCCCCC', -1800.0, 'steered', 10, 200, 210, 0, batch=3, rank=1)]
    assert qc_utilization(records + idle, 2) == pytest.approx((35 + 10) / (2 * 110))


def test_model_quality(run_dir):
    quality = model_quality(run_dir)
    assert [q['batch'] for q in quality] == [1, 2]
    assert quality[0]['n'] == 2 and quality[0]['mae'] == pytest.approx((200 + 50) / 2)
    assert quality[0]['bias'] == pytest.approx((200 - 50) / 2)
    assert quality[1]['n'] == 2  # m7 and the repeat of CCO (failures carry no computed value)


def _check_png(path: Path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == 'PNG'
        assert image.width > 300 and image.height > 200


def test_write_report(run_dir):
    report = write_report(run_dir, qm9_lookup={'CCO': -701.5}.get)
    assert report == run_dir / 'report.md'
    text = report.read_text()
    links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)
    assert sorted(links) == sorted(['figures/top_molecules.png', 'figures/best_so_far.png',
                                    'figures/predictions.png', 'figures/timeline.png'])
    for link in links:
        _check_png(run_dir / link)
    assert 'interrupted' in text
    assert f'{STEERED_UTILIZATION:.2f}' in text
    assert 'CCCCC' in text and 'simulation_records.jsonld: 1' in text
    assert '2 failed' in text


def test_report_of_finished_run(run_dir):
    (run_dir / 'summary.json').write_text(json.dumps({'wall_time': 321.5, 'n_evaluated': 9, 'best': [{'x': 1}]}))
    text = write_report(load_run(run_dir), n_top=2, qm9_lookup=False).read_text()
    assert 'interrupted' not in text
    assert '| wall time | 321.5 s |' in text and '| n_evaluated | 9 |' in text
    assert text.count('`CCCC') == 2  # Top 2 only: CCCCC and CCCC


def test_report_of_empty_run(tmp_path):
    (tmp_path / 'run_params.json').write_text(json.dumps({'objective': 'atomization_energy', 'parallel_guesses': 2}))
    report = write_report(tmp_path, qm9_lookup=False)
    text = report.read_text()
    assert 'No successful QC evaluation yet' in text
    assert '![' not in text  # No figure without data
    assert not (tmp_path / 'figures').exists() or not list((tmp_path / 'figures').iterdir())


def test_cli(run_dir, capsys, tmp_path):
    assert main([str(run_dir), '--no-qm9', '--top', '3']) == 0
    out = capsys.readouterr().out
    assert f'Report: {run_dir / "report.md"}' in out
    assert 'CCCCC' in out and 'OCCO' not in out  # Top 3 only
    assert main([str(tmp_path / 'missing')]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: Run directory not found') and len(err.splitlines()) == 1


def _state(**kwargs) -> ProgressState:
    values = dict(done=12, total=40, evaluated=12, target=40, failed=1, in_flight=2, queue_depth=17, batches=3,
                  best_smiles='CCO',
                  best_value=-512.3, utilization=0.97, objective='atomization_energy', phase='steered')
    values.update(kwargs)
    return ProgressState(**values)


def test_progress_log_lines(caplog):
    stream = io.StringIO()
    caplog.set_level(logging.INFO, logger='moldesign.report.progress')
    reporter = ProgressReporter(stream=stream, interval=3600)
    reporter.start()
    reporter.update(_state())
    reporter.update(_state(evaluated=13))  # Within the interval: not logged
    reporter.update(_state(evaluated=14, failed=2, best_value=-600.0))
    reporter.stop()  # Always logs the last state
    messages = [r.getMessage() for r in caplog.records if r.name == 'moldesign.report.progress']
    assert messages == [
        'progress: 12/40 evaluated (1 failed), 2 in flight, queue 17, 3 batches, best CCO -512.3 kcal/mol, '
        'utilization 0.97, phase steered',
        'progress: 14/40 evaluated (2 failed), 2 in flight, queue 17, 3 batches, best CCO -600.0 kcal/mol, '
        'utilization 0.97, phase steered',
    ]
    assert stream.getvalue() == ''  # Non-terminal: log lines only, no live display

    caplog.clear()
    reporter = ProgressReporter(stream=stream, interval=0)
    reporter.update(_state(best_smiles=None, best_value=None, utilization=None, phase='initial'))
    reporter.update(_state(utilization=float('nan')))
    assert 'best none yet, utilization n/a, phase initial' in caplog.records[0].getMessage()
    assert 'utilization n/a, phase steered' in caplog.records[1].getMessage()


def test_progress_disabled(caplog):
    stream = io.StringIO()
    caplog.set_level(logging.DEBUG)
    reporter = ProgressReporter(enabled=False, stream=stream, interval=0)
    reporter.start()
    reporter.update(_state())
    reporter.stop()
    assert not [r for r in caplog.records if r.name == 'moldesign.report.progress']
    assert stream.getvalue() == ''


class _FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_live_on_terminal(caplog):
    stream = _FakeTerminal()
    caplog.set_level(logging.INFO)
    root = logging.getLogger()
    console_handler = logging.StreamHandler(stream)
    root.addHandler(console_handler)
    try:
        with ProgressReporter(stream=stream, interval=0) as reporter:
            reporter.update(_state())
            assert console_handler not in root.handlers  # Routed through the live console meanwhile
            logging.getLogger('moldesign.test').info('hello from a worker thread')
        assert console_handler in root.handlers
    finally:
        root.removeHandler(console_handler)
    output = stream.getvalue()
    assert '12/40' in output and 'CCO' in output and '-512.3' in output
    assert output.count('hello from a worker thread') == 1
    assert not [r for r in caplog.records if r.name == 'moldesign.report.progress']  # Never both
