"""Shared pieces of the benchmarks: the GFN2-xTB distribution of the objectives over QM9, run.py campaigns.

The distribution (:func:`qm9_gfn2_sample`) is made of GFN2-xTB single points at QM9's own (B3LYP)
geometries, with tblite's Python interface (same method, accuracy and charge as the application's
``xtb`` back end; its numbers agree with ``moldesign.simulate.xtb.compute_energy(..., relax=False)``
to 1e-10 Hartree) and the reference atom energies of
:func:`moldesign.simulate.compute_reference_energy` with the ``xtb`` spec, exactly as the application
computes them. About 4 ms per molecule with one thread. Cached as CSV in
``<moldesign cache dir>/bench`` (``$MOLDESIGN_CACHE_DIR`` or ``platformdirs.user_cache_dir('moldesign')``),
keyed by sample size, seed, method, tblite version, reference energies and the QM9 source.

The application RELAXES its molecules; the distribution uses unrelaxed single points, which are a
little higher (less negative). :func:`relaxation_shift` measures that difference on a few QM9 molecules.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Dict, List, Optional, Sequence

os.environ.setdefault('OMP_NUM_THREADS', '1')  # Before tblite is loaded: single points are tiny

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
"""Root of the repository (where run.py lives)"""
RESULTS_DIR = REPO / 'bench' / 'results'
"""Where the benchmarks write the JSON of their latest figures"""
OBJECTIVES = ('atomization_energy', 'atomization_energy_per_atom')
"""Objectives of the application (names of AtomizationRecord fields)"""
METHOD = 'GFN2-xTB'
"""Method of every number of the benchmarks"""


def bench_cache_dir() -> Path:
    """Cache directory of the benchmarks (``<moldesign cache dir>/bench``)"""
    from moldesign.qm9 import cache_dir
    return cache_dir() / 'bench'


def reference_energies(spec_name: str = 'xtb') -> Dict[str, float]:
    """Energies of the isolated atoms (Hartree) at a QC specification (default GFN2-xTB), as the application
    computes them"""
    from moldesign.simulate import compute_reference_energy, get_spec
    spec = get_spec(spec_name)
    return {e: compute_reference_energy(e, spec) for e in ('H', 'C', 'N', 'O', 'F')}


def gfn2_single_point(symbols: Sequence[str], coords: np.ndarray) -> float:
    """GFN2-xTB energy (Hartree) of a neutral closed-shell molecule at a fixed geometry

    Args:
        symbols: Element symbols
        coords: Coordinates (Angstrom)
    Returns:
        Total energy (Hartree)
    """
    from ase.data import atomic_numbers
    from ase.units import Bohr
    from tblite.interface import Calculator
    calc = Calculator('GFN2-xTB', np.array([atomic_numbers[s] for s in symbols]), np.asarray(coords) / Bohr,
                      charge=0.0, uhf=0)
    calc.set('verbosity', 0)
    calc.set('accuracy', 1.0)
    energy = float(calc.singlepoint().get('energy'))
    del calc
    return energy


def _atomic_write_csv(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        table.to_csv(tmp, index=False, float_format='%.6f')
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cache_key(n: int, seed: int, refs: Dict[str, float]) -> str:
    from moldesign.qm9 import _cache_path
    text = json.dumps({'n': n, 'seed': seed, 'method': METHOD, 'tblite': version('tblite'), 'qm9': _cache_path().name,
                       'refs': {e: round(v, 8) for e, v in sorted(refs.items())}, 'format': 1}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def qm9_gfn2_sample(n: int, seed: int = 0, refs: Optional[Dict[str, float]] = None) -> pd.DataFrame:
    """GFN2-xTB objectives of a random QM9 sample at QM9's geometries (cached on disk)

    Args:
        n: Number of QM9 molecules (drawn with ``moldesign.qm9.sample_molecules(n, seed)``, search space only)
        seed: Seed of the sample
        refs: Reference atom energies (default: computed with :func:`reference_energies`)
    Returns:
        One row per molecule whose SCF converged: smiles, qm9_index, n_atoms, n_heavy_atoms, total_energy
        (Ha), atomization_energy, atomization_energy_per_atom (kcal/mol, GFN2), qm9_atomization_energy
        (kcal/mol, QM9's B3LYP), in sample order
    """
    from moldesign.chem import count_elements
    from moldesign.qm9 import sample_molecules
    from moldesign.simulate import HARTREE_TO_KCAL_MOL
    from moldesign.simulate.embed import from_xyz

    refs = refs or reference_energies()
    path = bench_cache_dir() / f'qm9-gfn2-sp-n{n}-seed{seed}-{_cache_key(n, seed, refs)}.csv'
    if path.is_file():
        return pd.read_csv(path)
    sample = sample_molecules(n, seed=seed)
    rows, n_failed = [], 0
    start = time.perf_counter()
    for row in sample.itertuples():
        symbols, coords = from_xyz(row.xyz)
        try:
            energy = gfn2_single_point(symbols, coords)
        except Exception as exc:  # tblite raises when the SCF does not converge
            logger.warning(f'{row.smiles}: GFN2 single point failed: {exc}')
            n_failed += 1
            continue
        reference = sum(k * refs[e] for e, k in count_elements(row.smiles).items())
        atomization = (energy - reference) * HARTREE_TO_KCAL_MOL
        rows.append((row.smiles, row.qm9_index, row.n_atoms, row.n_heavy_atoms, energy, atomization,
                     atomization / row.n_atoms, row.atomization_energy))
    table = pd.DataFrame(rows, columns=['smiles', 'qm9_index', 'n_atoms', 'n_heavy_atoms', 'total_energy',
                                        'atomization_energy', 'atomization_energy_per_atom',
                                        'qm9_atomization_energy'])
    print(f'Computed GFN2-xTB single points of {len(table)} QM9 molecules ({n_failed} failed) in '
          f'{time.perf_counter() - start:.0f} s; cached in {path}', file=sys.stderr)
    _atomic_write_csv(table, path)
    return table


def relaxation_shift(table: pd.DataFrame, n: int = 40, seed: int = 0,
                     refs: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """How much lower the application's relaxed values are than the single points of the distribution

    Runs the application's task (:func:`moldesign.simulate.compute_atomization_energy`: embedding from
    SMILES, GFN2 relaxation) on ``n`` molecules of ``table`` (cached on disk).

    Args:
        table: Output of :func:`qm9_gfn2_sample`
        n: Number of molecules relaxed
        seed: Which molecules
        refs: Reference atom energies
    Returns:
        Median of (relaxed - single point) for each objective (kcal/mol; negative: relaxed is lower)
    """
    from moldesign.simulate import compute_atomization_energy, get_spec

    refs = refs or reference_energies()
    path = bench_cache_dir() / f'relax-shift-n{n}-seed{seed}-{_cache_key(len(table), seed, refs)}.json'
    if path.is_file():
        return json.loads(path.read_text())
    spec = get_spec('xtb')
    rng = np.random.default_rng(seed)
    rows = table.iloc[rng.choice(len(table), size=min(n, len(table)), replace=False)]
    diffs = {o: [] for o in OBJECTIVES}
    for row in rows.itertuples():
        try:
            record = compute_atomization_energy(row.smiles, spec, refs)
        except Exception as exc:
            logger.warning(f'{row.smiles}: relaxation failed: {exc}')
            continue
        for o in OBJECTIVES:
            diffs[o].append(getattr(record, o) - getattr(row, o))
    result = {o: float(np.median(d)) for o, d in diffs.items()}
    result.update({f'{o}_p90_abs': float(np.percentile(np.abs(d), 90)) for o, d in diffs.items()})
    result['n'] = len(diffs[OBJECTIVES[0]])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def quantile(value: float, distribution: np.ndarray) -> float:
    """Fraction of the distribution at least as good (<=) as ``value``; at least 1/len(distribution)"""
    distribution = np.asarray(distribution)
    return max(int(np.sum(distribution <= value)), 1) / len(distribution)


def best_so_far(values: Sequence[Optional[float]]) -> np.ndarray:
    """Running minimum of a sequence of objective values (None/NaN: a failed evaluation)"""
    out, best = [], np.inf
    for v in values:
        if v is not None and np.isfinite(v):
            best = min(best, v)
        out.append(best)
    return np.array(out)


def app_env(repo: Optional[Path] = None) -> Dict[str, str]:
    """Environment of a ``run.py`` subprocess

    Args:
        repo: Another checkout whose moldesign package to use; default: this one
    Returns:
        This process's environment with the venv's ``bin/`` first on PATH (HTEX needs interchange.py)
        and the checkout first on PYTHONPATH (also for the Parsl workers and scripts outside its root)
    """
    env = dict(os.environ)
    env['PATH'] = f'{Path(sys.executable).parent}{os.pathsep}{env.get("PATH", "")}'
    env['PYTHONPATH'] = os.pathsep.join([str(Path(repo or REPO).resolve()), *filter(None, [env.get('PYTHONPATH')])])
    return env


def use_this_checkout() -> None:
    """Import this checkout's moldesign in this process and in the processes it starts (Parsl workers)

    The virtual environment's editable install may point at another checkout; a benchmark that imports moldesign
    itself (rather than through ``run.py``) calls this first. It also puts the venv's ``bin/`` first on PATH.
    """
    env = app_env()
    os.environ['PATH'], os.environ['PYTHONPATH'] = env['PATH'], env['PYTHONPATH']
    if sys.path[:1] != [str(REPO)]:
        sys.path.insert(0, str(REPO))


def run_app(out_dir: Path, args: Sequence[str], log_path: Path, timeout: float = 3600,
            repo: Optional[Path] = None) -> Path:
    """Run ``run.py`` as a subprocess and return its run directory

    Args:
        out_dir: Passed as ``--out-dir`` (must be empty or new: the single run directory in it is returned)
        args: Other command-line arguments
        log_path: File receiving the standard output and error
        timeout: Seconds before the run is killed
        repo: Another checkout whose run.py and moldesign package to use (experiments on a patched copy;
            put first on PYTHONPATH, also for the Parsl workers); default: this one
    Returns:
        The run directory
    Raises:
        RuntimeError: if run.py fails (the last lines of its log are in the message)
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    env = app_env(repo)
    verify = [] if '--verify-qc' in args else ['--verify-qc', 'none']  # The benchmarks compare GFN2-xTB searches
    cmd = [sys.executable, str(Path(repo or REPO) / 'run.py'), '--out-dir', str(out_dir), '--quiet', '--no-report',
           *verify, *args]
    with log_path.open('w') as log:
        proc = subprocess.run(cmd, cwd=repo or REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        tail = ' | '.join(log_path.read_text().strip().splitlines()[-3:])
        raise RuntimeError(f'run.py {" ".join(args)} exited with {proc.returncode}: {tail}')
    runs = sorted(p for p in out_dir.iterdir() if (p / 'run_params.json').is_file())
    if len(runs) != 1:
        raise RuntimeError(f'Expected one run directory in {out_dir}, found {len(runs)}')
    return runs[0]


def molecule_records(run_dir: Path) -> List[dict]:
    """Molecule records of a run (reference atoms left out), in evaluation order, failures included"""
    from moldesign.report.data import load_run
    return load_run(run_dir).molecule_records


def machine_info() -> Dict[str, str]:
    """nproc, CPU model and load average of this machine"""
    model = 'unknown'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return {'nproc': str(os.cpu_count()), 'cpu_model': model,
            'loadavg_at_start': ' '.join(f'{x:.2f}' for x in os.getloadavg())}


def write_results(name: str, data: dict) -> Path:
    """Write the latest figures of a benchmark to ``bench/results/<name>.json``"""
    from moldesign.store import dump_json
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f'{name}.json'
    dump_json(data, path)
    return path


def tmp_work_dir(prefix: str, keep: Optional[Path]) -> Path:
    """Directory for the campaigns: ``keep`` if given (kept), else a new temporary one"""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return keep
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_tmp(path: Path, keep: Optional[Path]) -> None:
    """Remove a temporary work directory (not a kept one)"""
    if keep is None:
        shutil.rmtree(path, ignore_errors=True)
