"""The benchmarks' figures (quantile, evaluations needed, discovery-rate ratio, task overheads) and a
smoke run of their ``--quick`` modes (real run.py campaigns, marked slow)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))

import common  # noqa: E402
import search_efficiency  # noqa: E402
import utilization  # noqa: E402


def test_quantile_counts_ties_and_floors_at_one_molecule():
    dist = np.array([-3., -2., -2., -1., 0.])
    assert common.quantile(-2., dist) == pytest.approx(3 / 5)
    assert common.quantile(-10., dist) == pytest.approx(1 / 5)  # Better than every molecule
    assert common.quantile(5., dist) == 1.0


def test_best_so_far_skips_failures():
    assert common.best_so_far([3., None, np.nan, 1., 2.]).tolist() == [3., 3., 3., 1., 1.]


def test_summarise_first_evaluation_reaching_the_best():
    dist = np.linspace(-100, 0, 1000)
    curve = np.array([-10., np.nan, -99.95, -50., -99.95])
    s = search_efficiency.summarise(curve, list('abcde'), dist)
    assert s['evaluations'] == 3 and s['smiles'] == 'c' and s['best'] == -99.95
    assert s['quantile'] == pytest.approx(1 / 1000)
    assert s['ratio'] == pytest.approx(1000 / 3)
    # Conservative figures: a relaxed value moved up by 1 kcal/mol loses quantile
    c = search_efficiency.summarise(curve, list('abcde'), dist, shift=-1.)
    assert c['conservative_quantile'] > c['quantile'] and c['conservative_ratio'] < c['ratio']


def test_summarise_all_failed():
    s = search_efficiency.summarise(np.array([np.nan, np.nan]), [None, None], np.arange(10.))
    assert s['best'] is None and s['ratio'] == 0.


def test_task_overheads_from_timestamps():
    record = {'phase': 'steered', 'time': {'running': 0.5},
              'timestamp': {'created': 100.0, 'compute_started': 100.01, 'compute_ended': 100.51,
                            'result_received': 100.53}}
    initial = dict(record, phase='initial')
    over = utilization.task_overheads([record, initial])
    assert len(over['overhead']) == 1  # Steered phase only
    assert over['overhead'][0] == pytest.approx(0.03)
    assert over['to_worker'][0] == pytest.approx(0.01) and over['back'][0] == pytest.approx(0.02)


def test_prefetched_task_waiting_for_its_worker_is_not_overhead():
    def rec(created, started, ended, received, rank):
        return {'phase': 'steered', 'time': {'running': ended - started},
                'worker_info': {'hostname': 'h', 'PARSL_WORKER_POOL_ID': 'p', 'PARSL_WORKER_RANK': rank},
                'timestamp': {'created': created, 'compute_started': started, 'compute_ended': ended,
                              'result_received': received}}
    first = rec(0.0, 0.01, 1.0, 1.02, '0')
    waiting = rec(0.0, 1.002, 2.0, 2.02, '0')  # Prefetched: waited ~1 s for ``first`` on the same worker
    other = rec(0.0, 0.01, 1.5, 1.52, '1')  # Another worker: its end is no reason to wait
    over = utilization.task_overheads([first, waiting, other])
    assert over['queue_wait'] == pytest.approx([0.0, 1.0, 0.0])
    assert over['overhead'] == pytest.approx([0.03, 0.022, 0.03])
    assert over['to_worker'] == pytest.approx([0.01, 0.002, 0.01])


def test_gfn2_single_point_matches_the_application_back_end():
    from moldesign.simulate import get_spec
    from moldesign.simulate import xtb as xtb_backend
    from moldesign.simulate.embed import to_qcel
    symbols = ['O', 'H', 'H']
    coords = np.array([[0., 0., 0.117], [0., 0.757, -0.467], [0., -0.757, -0.467]])
    ours = common.gfn2_single_point(symbols, coords)
    app = xtb_backend.compute_energy(to_qcel(symbols, coords), get_spec('xtb'), relax=False).energy
    assert ours == pytest.approx(app, abs=1e-8)


def _run(script: str, *args: str, timeout: float) -> list:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get('PATH', ''))
    proc = subprocess.run([sys.executable, str(ROOT / 'bench' / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_search_efficiency_quick(tmp_path):
    lines = _run('search_efficiency.py', '--quick', '--objectives', 'atomization_energy', '--results-dir',
                 str(tmp_path), timeout=280)
    assert lines[-1].startswith('median discovery-rate ratio (atomization_energy): ')
    data = json.loads((tmp_path / 'search_efficiency_quick.json').read_text())
    res = data['objectives']['atomization_energy']
    steered = res['runs']['steered'][0]
    assert len(steered['values']) == data['budget'] == 16
    assert 1 <= steered['evaluations'] <= 16 and 0 < steered['quantile'] <= 1
    assert math.isclose(float(lines[-1].split(': ')[1]), res['median_ratio']['steered'], rel_tol=1e-3, abs_tol=0.05)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_utilization_quick(tmp_path):
    lines = _run('utilization.py', '--quick', '--results-dir', str(tmp_path), timeout=280)
    assert lines[-1].startswith('utilization ratio (interleaved / baseline): ')
    data = json.loads((tmp_path / 'utilization_quick.json').read_text())
    for mode in ('interleaved', 'baseline'):
        run = data['runs'][mode][0]
        assert 0 < run['utilization'] <= 1 and run['n_tasks'] == 8
        assert run['median_overhead_ms'] > 0
