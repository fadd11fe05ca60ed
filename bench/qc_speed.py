"""Speed of our GFN2-xTB task (tblite + ASE) against the native ``xtb --opt`` program.

Both relax the same 20 random QM9 molecules (seeded) from the same RDKit geometry (best of 10
ETKDG conformers by MMFF energy) written to XYZ. The native program runs in a temporary
directory with OMP_NUM_THREADS=1, its process start included. Run with OMP_NUM_THREADS=1::

    OMP_NUM_THREADS=1 python bench/qc_speed.py [--n 20] [--seed 1] [--optimizer BFGS] [--fmax 0.05]

Prints one line per molecule, the median times, and as the LAST line the median of the
per-molecule ratios (ours / native) for the relaxation from the same geometry.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from moldesign.qm9 import sample_molecules
from moldesign.simulate import compute_atomization_energy, compute_reference_energy, get_spec
from moldesign.simulate import xtb as xtb_backend
from moldesign.simulate.embed import generate_conformer, to_qcel, to_xyz

HARTREE_TO_KCAL_MOL = 627.5094737775374


def run_native(xyz: str) -> tuple[float, float, int]:
    """Relax with the native xtb program; return (wall time s, energy Ha, steps)"""
    with tempfile.TemporaryDirectory(prefix='bench-xtb-') as tmp:
        with open(os.path.join(tmp, 'mol.xyz'), 'w') as fp:
            fp.write(xyz)
        env = dict(os.environ, OMP_NUM_THREADS='1', OMP_STACKSIZE=os.environ.get('OMP_STACKSIZE', '500M'))
        start = time.perf_counter()
        proc = subprocess.run(['xtb', 'mol.xyz', '--opt'], cwd=tmp, env=env, capture_output=True, text=True,
                              timeout=600)
        elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f'xtb failed: {proc.stderr.strip().splitlines()[-1:]}')
    energy = float(re.findall(r'TOTAL ENERGY\s+(-?\d+\.\d+)', proc.stdout)[-1])
    steps = re.findall(r'GEOMETRY OPTIMIZATION CONVERGED AFTER\s+(\d+)\s+ITERATIONS', proc.stdout)
    return elapsed, energy, int(steps[-1]) if steps else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n', type=int, default=20, help='Number of QM9 molecules')
    parser.add_argument('--seed', type=int, default=1, help='Seed of the QM9 sample')
    parser.add_argument('--optimizer', default=xtb_backend.DEFAULT_OPTIMIZER, help='ASE optimiser')
    parser.add_argument('--fmax', type=float, default=xtb_backend.DEFAULT_FMAX, help='Force criterion (eV/A)')
    args = parser.parse_args()

    if shutil.which('xtb') is None:
        sys.exit('The native xtb program is not on PATH (apt-get install xtb)')
    print(f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "(unset)")}  optimizer={args.optimizer} '
          f'fmax={args.fmax} eV/A  n={args.n} seed={args.seed}')
    spec = get_spec('xtb', optimizer=args.optimizer, fmax=args.fmax)
    molecules = sample_molecules(args.n, seed=args.seed)['smiles'].tolist()

    # Warm up both (imports, library loading, page cache)
    refs = {e: compute_reference_energy(e, spec) for e in 'HCNOF'}
    compute_atomization_energy('CCO', spec, refs)
    run_native(to_xyz(*generate_conformer('CCO')))

    print(f'{"smiles":<24s} {"ours_s":>7s} {"task_s":>7s} {"native_s":>8s} {"ratio":>6s} '
          f'{"steps":>5s} {"nat_steps":>9s} {"dE_kcal":>8s}')
    ours, tasks, natives, ratios, task_ratios, de = [], [], [], [], [], []
    for smiles in molecules:
        symbols, coords = generate_conformer(smiles)
        xyz = to_xyz(symbols, coords, smiles)
        molecule = to_qcel(symbols, coords)

        start = time.perf_counter()
        result = xtb_backend.compute_energy(molecule, spec, relax=True)
        t_ours = time.perf_counter() - start

        start = time.perf_counter()  # The whole task: embedding, relaxation, record
        compute_atomization_energy(smiles, spec, refs)
        t_task = time.perf_counter() - start

        t_native, e_native, n_native = run_native(xyz)
        ours.append(t_ours)
        tasks.append(t_task)
        natives.append(t_native)
        ratios.append(t_ours / t_native)
        task_ratios.append(t_task / t_native)
        de.append((result.energy - e_native) * HARTREE_TO_KCAL_MOL)
        print(f'{smiles:<24s} {t_ours:7.3f} {t_task:7.3f} {t_native:8.3f} {t_ours / t_native:6.2f} '
              f'{result.n_steps:5d} {n_native:9d} {de[-1]:8.3f}')

    print(f'median time (s): ours {np.median(ours):.3f}, whole task (with 10-conformer embedding) '
          f'{np.median(tasks):.3f}, native xtb --opt {np.median(natives):.3f}')
    print(f'energy ours - native (kcal/mol): median {np.median(de):+.3f}, max |dE| {np.max(np.abs(de)):.3f}')
    print(f'median ratio whole task / native: {np.median(task_ratios):.2f}')
    print(f'median ratio ours / native (same starting geometry): {np.median(ratios):.2f}')


if __name__ == '__main__':
    main()
