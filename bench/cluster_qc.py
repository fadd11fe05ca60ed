"""Wall times of the cluster QC codes (psi4, NWChem) on small molecules, HF/STO-3G.

For water and methane, times a single point and a relaxation with each back end and prints
the median over ``--repeat`` runs, the ratio to the PySCF back end measured in the same run
(the baseline), the energy and the number of optimiser steps. Example::

    python bench/cluster_qc.py --repeat 3
    python bench/cluster_qc.py --nwchem-ranks 2 --mpiexec "mpirun --allow-run-as-root -n {total_ranks} \
        --map-by ppr:{ranks_per_node}:node"
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import time
from typing import Dict, List, Tuple

import qcelemental as qcel

from moldesign.simulate.base import QCSpec, get_backend, get_spec

logger = logging.getLogger(__name__)

MOLECULES: Dict[str, str] = {
    'water': """
O 0.000 0.000 0.117
H 0.000 0.757 -0.469
H 0.000 -0.757 -0.469
""",
    'methane': """
C 0.000 0.000 0.000
H 0.650 0.650 0.650
H -0.650 -0.650 0.650
H -0.650 0.650 -0.650
H 0.650 -0.650 -0.650
""",
}
"""Starting geometries (Angstrom), a little away from the HF/STO-3G minima"""


def _time(spec: QCSpec, molecule: qcel.models.Molecule, relax: bool, repeat: int) -> Tuple[float, float, int]:
    """Median wall time (s), energy (Ha) and optimiser steps of one back end on one molecule"""
    backend = get_backend(spec.program)
    times: List[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = backend.compute_energy(molecule, spec, relax)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result.energy, result.n_steps


def main(args=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeat', type=int, default=3, help='Runs per measurement (median reported)')
    parser.add_argument('--nwchem-ranks', type=int, default=1, help='MPI ranks for an extra NWChem row')
    parser.add_argument('--mpiexec', default=None, help='MPI launch template for --nwchem-ranks > 1')
    args = parser.parse_args(args)

    specs = {'pyscf (baseline)': get_spec('pyscf/hf/sto-3g')}
    if shutil.which('psi4'):
        specs['psi4'] = get_spec('psi4/hf/sto-3g')
    if shutil.which('nwchem'):
        specs['nwchem, driver'] = get_spec('nwchem/hf/sto-3g')
        specs['nwchem, geomeTRIC'] = get_spec('nwchem/hf/sto-3g', optimizer='geometric')
        if args.nwchem_ranks > 1:
            kw = {'nwchem_ranks': args.nwchem_ranks}
            if args.mpiexec:
                kw['nwchem_mpiexec'] = args.mpiexec
            specs[f'nwchem, driver, {args.nwchem_ranks} ranks'] = get_spec('nwchem/hf/sto-3g', **kw)

    # Warm-up: first calls pay one-off costs (imports, QCEngine's NWChem version check)
    warm = qcel.models.Molecule.from_data(MOLECULES['water'])
    for spec in specs.values():
        get_backend(spec.program).compute_energy(warm, spec, False)

    print(f'HF/STO-3G, median of {args.repeat} runs, 1 thread per program unless OMP_NUM_THREADS says otherwise')
    print(f'{"molecule":8s} {"task":12s} {"back end":28s} {"time/s":>7s} {"x baseline":>10s} '
          f'{"energy/Ha":>14s} {"steps":>5s}')
    for name, xyz in MOLECULES.items():
        molecule = qcel.models.Molecule.from_data(xyz)
        for relax in (False, True):
            task = 'relaxation' if relax else 'single point'
            baseline = None
            for label, spec in specs.items():
                elapsed, energy, steps = _time(spec, molecule, relax, args.repeat)
                baseline = baseline or elapsed
                print(f'{name:8s} {task:12s} {label:28s} {elapsed:7.2f} {elapsed / baseline:10.2f} '
                      f'{energy:14.8f} {steps:5d}')


if __name__ == '__main__':
    main()
