"""NWChem back end (the QC code of the original application), run through QCEngine.

Energies use ``qcengine.compute(..., 'nwchem')``. Relaxations use, by default, NWChem's own
optimiser (QCEngine procedure ``nwchemdriver``: one NWChem run for the whole relaxation),
which is about twice as fast as QCEngine's geomeTRIC procedure (one NWChem run per gradient):
water HF/STO-3G 2.2 s against 4.5 s here; keyword ``optimizer: geometric`` selects geomeTRIC.
QCEngine runs NWChem in a temporary scratch directory; geomeTRIC writes files in the working
directory, so geomeTRIC relaxations change the working directory to a temporary one meanwhile
(``os.chdir``: do not run them from several threads of one process).

Closed shells are RHF/RKS; open shells (the isolated atoms, multiplicity > 1) UHF (``scf; uhf``)
or UKS (``dft; odft``). Method names are QCEngine's NWChem names (``hf``, ``b3lyp``, ...),
basis names NWChem's library names (``sto-3g``, ``6-31g*``).

Cartesian or spherical: QCEngine writes NWChem's basis block without ``spherical``, so NWChem uses
Cartesian d and f functions for every basis set (measured: UHF/cc-pVDZ O atom -74.7923005 Ha, PySCF
Cartesian -74.7923005, spherical -74.7921661). That is what the psi4 and PySCF back ends use for the
6-31G family (:func:`moldesign.simulate.basis.uses_cartesian`); for other basis sets with d
functions pass ``{"basis__spherical": true}`` to match them. STO-3G has no d functions on H-F.

Keywords of the QC specification understood here (all optional):

- ``optimizer`` (``"driver"`` (default) or ``"geometric"``): how geometries are relaxed
- ``max_steps`` (int, default 100): largest number of optimiser steps
- ``timeout`` (float, seconds, default 3600): wall-time limit of one computation; the NWChem
  processes this call started are killed and :class:`~moldesign.simulate.base.QCFailure` raised
- ``memory`` (float, GB, default 2): memory given to NWChem (per task; QCEngine's default would be
  90% of the node's free memory for every task)
- ``nwchem_ranks`` (int, default 1): MPI ranks; more than 1 launches NWChem with ``mpiexec``
  (QCEngine ``task_config``: ``ncores`` = ranks, ``use_mpiexec``)
- ``nwchem_mpiexec`` (str, default ``"mpirun -n {total_ranks} --map-by ppr:{ranks_per_node}:node"``,
  Open MPI syntax): MPI launch template in QCEngine's format (must name ``{total_ranks}`` and
  ``{ranks_per_node}``); e.g. ``"mpiexec -n {total_ranks} -ppn {ranks_per_node}"`` for MPICH,
  ``"srun -n {total_ranks} --ntasks-per-node {ranks_per_node}"`` under Slurm; add
  ``--allow-run-as-root`` to Open MPI's command when running as root (containers)
- any other key is an NWChem keyword in QCEngine's ``block__keyword`` form, e.g.
  ``{"scf__thresh": 1e-8}`` or ``{"dft__grid": "fine"}``
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Dict, Iterator, List

import qcelemental as qcel

from moldesign.simulate.base import BackendResult, QCFailure, QCSpec

logger = logging.getLogger(__name__)

NWCHEM_NOT_FOUND = ('nwchem not found on PATH: install it '
                    '(conda install -c conda-forge nwchem, or apt-get install nwchem)')
"""Message of the failure raised when NWChem is missing"""

DEFAULT_MPIEXEC = 'mpirun -n {total_ranks} --map-by ppr:{ranks_per_node}:node'
"""Default MPI launch template (Open MPI), QCEngine format"""

HF_NAMES = ('hf', 'scf')
"""Method names that mean Hartree-Fock (other names are DFT functionals or correlated methods)"""

_OUR_KEYWORDS = ('optimizer', 'max_steps', 'timeout', 'memory', 'nwchem_ranks', 'nwchem_mpiexec')
"""Keywords consumed by this module (the others go to NWChem)"""

_LAUNCHER_NAMES = ('nwchem', 'mpirun', 'mpiexec', 'orterun', 'prterun', 'hydra_pmi_proxy', 'srun')
"""Names of the processes a timeout kills (only descendants of this process started by this call)"""


def _nwchem_keywords(molecule: qcel.models.Molecule, spec: QCSpec) -> Dict[str, Any]:
    """NWChem keywords (QCEngine ``block__keyword`` form) of a computation"""
    keywords: Dict[str, Any] = {}
    if int(molecule.molecular_multiplicity) > 1:
        if spec.method.lower() in HF_NAMES:
            keywords['scf__uhf'] = True
        else:
            keywords['dft__odft'] = True
    keywords.update({k: v for k, v in spec.keywords.items() if k not in _OUR_KEYWORDS})
    return keywords


def _task_config(spec: QCSpec, scratch: str) -> Dict[str, Any]:
    """QCEngine task configuration: scratch directory, memory, MPI ranks"""
    ranks = int(spec.keywords.get('nwchem_ranks', 1))
    if ranks < 1:
        raise QCFailure(f'NWChem keyword nwchem_ranks must be >= 1, got {ranks}')
    config: Dict[str, Any] = {'scratch_directory': scratch, 'memory': float(spec.keywords.get('memory', 2.0)),
                              'ncores': ranks, 'nnodes': 1, 'retries': 0}
    if ranks > 1:
        config.update(use_mpiexec=True, cores_per_rank=1,
                      mpiexec_command=str(spec.keywords.get('nwchem_mpiexec', DEFAULT_MPIEXEC)))
    return config


def _one_line(message: str, limit: int = 300) -> str:
    """The most informative line of a (long, multi-line) QCEngine error message

    NWChem ends a failed run with a banner: ``<what failed>  <code>``, details,
    ``current input line : ...`` and sometimes a hint (``There is an error in ...``).
    """
    lines = [' '.join(line.split()) for line in str(message).splitlines() if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith('current input line'):
            banner = [line for line in lines[max(0, i - 8):i] if not set(line) <= set('-')]
            coded = [line for line in banner if line.split()[-1].lstrip('-').isdigit()]
            what = coded[-1].rsplit(' ', 1)[0] if coded else (banner[-1] if banner else 'NWChem error')
            hints = [line for line in lines[i:] if line.startswith(('This type of error', 'There is an error'))]
            hint = hints[0] if hints else ''
            return (what + (f' ({hint})' if hint else ''))[:limit]
    for line in lines:
        if 'There is an error' in line:
            return line[:limit]
    if 'STDERR:' in lines:  # e.g. the MPI launcher refused to start
        stderr = lines[lines.index('STDERR:') + 1:]
        stderr = [line for line in stderr[:stderr.index('TRACEBACK:')] if 'TRACEBACK:' in stderr] or stderr
        stderr = [line for line in stderr if not set(line) <= set('-')]
        if stderr:
            return f'{lines[0]} {stderr[0]}'[:limit]
    return (lines[0] if lines else 'unknown error')[:limit]


@contextmanager
def _watchdog(timeout: float) -> Iterator[Dict[str, bool]]:
    """Kill the NWChem (and MPI launcher) processes started by this process within the block
    if the block lasts longer than ``timeout`` seconds

    Yields:
        A dict whose ``expired`` entry tells whether the time limit was hit
    """
    import psutil

    state = {'expired': False}
    started = time.time() - 1.0  # process creation times have a coarse resolution
    me = psutil.Process()

    def _kill():
        state['expired'] = True
        for child in me.children(recursive=True):
            try:
                if child.create_time() >= started and child.name().lower().startswith(_LAUNCHER_NAMES):
                    logger.warning('Killing %s (pid %d): NWChem time limit of %g s exceeded',
                                   child.name(), child.pid, timeout)
                    child.kill()
            except psutil.Error:
                pass

    timer = threading.Timer(timeout, _kill)
    timer.daemon = True
    timer.start()
    try:
        yield state
    finally:
        timer.cancel()


@contextmanager
def _working_directory(path: str) -> Iterator[None]:
    """Run a block in another working directory (geomeTRIC writes files in the current one)"""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _check(result: Any, spec: QCSpec, expired: bool, timeout: float) -> None:
    """Raise a one-line QCFailure if a QCEngine result is a failure"""
    if expired:
        raise QCFailure(f'NWChem {spec.method}/{spec.basis} exceeded the time limit of {timeout:g} s '
                        '(keyword "timeout")')
    if not getattr(result, 'success', False):
        error = getattr(result, 'error', None)
        kind = getattr(error, 'error_type', 'error')
        line = _one_line(getattr(error, 'error_message', str(error)))
        if line.rstrip().endswith(':'):  # nothing after "QCEngine Unknown Error:": NWChem did not even start
            ranks = int(spec.keywords.get('nwchem_ranks', 1))
            launcher = spec.keywords.get('nwchem_mpiexec', DEFAULT_MPIEXEC) if ranks > 1 else 'nwchem'
            line = f'NWChem produced no output; check that it starts with the launch command {launcher!r}'
        raise QCFailure(f'NWChem {spec.method}/{spec.basis} failed ({kind}): {line}')


def compute_energy(molecule: qcel.models.Molecule, spec: QCSpec, relax: bool) -> BackendResult:
    """Compute the energy of a molecule with NWChem, relaxing its geometry first if asked

    Args:
        molecule: Molecule (charge and multiplicity are used); single atoms are never relaxed
        spec: QC specification: NWChem method, basis and keywords (see the module docstring)
        relax: Whether to relax the geometry (NWChem's driver or geomeTRIC) before taking the energy
    Returns:
        Energy (Hartree) of the final geometry, final geometry, number of gradient evaluations of
        the relaxation (0 for a single point), NWChem version
    Raises:
        QCFailure: NWChem missing, NWChem or QCEngine error (unknown method or basis, no SCF or
            optimiser convergence), or the computation exceeded the ``timeout`` keyword
    """
    if shutil.which('nwchem') is None:
        raise QCFailure(NWCHEM_NOT_FOUND)
    if not spec.basis:
        raise QCFailure(f'NWChem needs a basis set: use "nwchem/{spec.method}/<basis>", e.g. "nwchem/hf/sto-3g"')
    import qcengine as qcng

    relax = bool(relax) and len(molecule.symbols) > 1
    optimizer = str(spec.keywords.get('optimizer', 'driver')).lower()
    if optimizer not in ('driver', 'geometric'):
        raise QCFailure(f'NWChem keyword optimizer must be "driver" or "geometric", got {optimizer!r}')
    timeout = float(spec.keywords.get('timeout', 3600))
    max_steps = int(spec.keywords.get('max_steps', 100))
    keywords = _nwchem_keywords(molecule, spec)
    model = {'method': spec.method, 'basis': spec.basis}

    with tempfile.TemporaryDirectory(prefix='moldesign-nwchem-') as tmp, \
            (_working_directory(tmp) if relax and optimizer == 'geometric' else nullcontext()):
        task_config = _task_config(spec, tmp)
        with _watchdog(timeout) as state:
            try:
                if not relax:
                    inp = qcel.models.AtomicInput(molecule=molecule, driver='energy', model=model, keywords=keywords)
                    result = qcng.compute(inp, 'nwchem', raise_error=False, task_config=task_config)
                elif optimizer == 'driver':
                    keywords.setdefault('driver__maxiter', max_steps)
                    inp = {'initial_molecule': molecule, 'keywords': {'program': 'nwchem'},
                           'input_specification': {'driver': 'gradient', 'model': model, 'keywords': keywords}}
                    result = qcng.compute(inp, 'nwchemdriver', raise_error=False, task_config=task_config)
                else:
                    inp = {'initial_molecule': molecule,
                           'keywords': {'program': 'nwchem', 'coordsys': 'tric', 'maxiter': max_steps},
                           'input_specification': {'driver': 'gradient', 'model': model, 'keywords': keywords}}
                    result = qcng.compute(inp, 'geometric', raise_error=False, task_config=task_config)
            except Exception as exc:  # QCEngine raises for malformed inputs before running anything
                raise QCFailure(f'NWChem {spec.method}/{spec.basis} failed ({type(exc).__name__}): '
                                f'{_one_line(str(exc))}') from None
        _check(result, spec, state['expired'], timeout)

    if not relax:
        return BackendResult(energy=float(result.return_result), molecule=molecule, n_steps=0,
                             program_version=str(result.provenance.version))
    trajectory: List[Any] = list(result.trajectory)
    if not trajectory:
        raise QCFailure(f'NWChem {spec.method}/{spec.basis} relaxation returned no steps')
    version = trajectory[-1].provenance.version or qcng.get_program('nwchem').get_version()
    return BackendResult(energy=float(result.energies[-1]), molecule=result.final_molecule,
                         n_steps=len(trajectory), program_version=str(version))
