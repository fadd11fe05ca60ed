"""psi4 back end: HF and DFT with psi4, geometries relaxed with psi4's own optimiser (optking).

How psi4 is run, and why
------------------------
psi4 is run as a program, ``psi4 -n <threads> input.dat output.dat``, in a scratch directory,
as a subprocess with a bounded wall time. The input file is a fixed Python script (psi4 input
files are Python, "psithon") that reads the molecule and options from ``moldesign_input.json``,
calls ``psi4.energy`` or ``psi4.optimize`` through psi4's Python API, and writes the energy, the
final geometry (Bohr; for relaxations the geometry and energy of the optimiser's last
evaluation, taken from ``return_history``), the number of optimiser iterations and psi4's version to
``moldesign_result.json`` -- or the one-line error when psi4 raises.

Not QCEngine: QCEngine 0.52's psi4 harness does not work with Debian's psi4 1.3.2 (it asks psi4
for a QCSchema version that old psi4 does not know: ``KeyError: "Schema name of
'qcschema_atomic_input' not understood"``), and importing psi4's Python module into our
interpreter ties us to the Python version psi4 was built for (Debian: the system Python, not
our virtual environment). The psithon script uses only API calls that psi4 has had since 1.1
(``geometry``, ``set_options``, ``energy``, ``optimize(return_history=True)``),
so the same path works with Debian's psi4 1.3.2 and with current conda-forge psi4 (1.9+) on a
cluster, whatever Python the worker runs.

Method names are psi4's (``hf``, ``b3lyp``, ...), basis names are psi4's (``sto-3g``, ``6-31g*``).
Closed shells use ``reference rhf``; open shells (the isolated atoms, multiplicity > 1) use
``reference uhf`` (UKS for DFT methods). The molecule is kept in its input frame
(``no_com``, ``no_reorient``, ``symmetry c1``).

Keywords of the QC specification understood here (all optional):

- ``timeout`` (float, seconds, default 3600): wall-time limit of one psi4 run; the run is killed
  and :class:`~moldesign.simulate.base.QCFailure` raised when it is exceeded
- ``memory`` (str, default ``"2 GB"``): psi4's memory budget
- ``max_steps`` (int, default 100): largest number of optimiser iterations (``geom_maxiter``)
- any other key is passed to psi4 as a global option (``psi4.set_options``), e.g.
  ``{"scf_type": "df"}``. Default options: ``scf_type pk`` (exact integrals, so energies agree
  with other programs to 1e-6 Ha; use ``df`` for large basis sets), ``e_convergence 1e-8``,
  ``d_convergence 1e-8``.

Threads: ``OMP_NUM_THREADS`` (1 if unset) is passed to psi4 as ``-n``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import qcelemental as qcel

from moldesign.simulate.base import BackendResult, QCFailure, QCSpec

logger = logging.getLogger(__name__)

PSI4_NOT_FOUND = ('psi4 not found on PATH: install it '
                  '(conda install -c conda-forge psi4, or apt-get install psi4)')
"""Message of the failure raised when psi4 is missing"""

DEFAULT_OPTIONS: Dict[str, Any] = {'scf_type': 'pk', 'e_convergence': 1e-8, 'd_convergence': 1e-8}
"""psi4 options set unless the specification's keywords override them"""

_OUR_KEYWORDS = ('timeout', 'memory', 'max_steps')
"""Keywords consumed by this module (the others go to psi4)"""

INPUT_NAME = 'moldesign_input.json'
RESULT_NAME = 'moldesign_result.json'

PSITHON_SCRIPT = f'''# moldesign psi4 driver: reads {INPUT_NAME}, writes {RESULT_NAME}
import json
import numpy
import psi4

with open({INPUT_NAME!r}) as fp:
    task = json.load(fp)
result = {{"success": False, "version": str(psi4.__version__)}}
try:
    psi4.set_memory(task["memory"])
    mol = psi4.geometry(task["geometry"])
    psi4.set_options(task["options"])
    geometry = None
    if task["relax"]:
        energy, history = psi4.optimize(task["method"], molecule=mol, return_history=True)
        n_steps = len(history["energy"])
        if history.get("coordinates"):  # geometry of the last energy evaluation (Bohr)
            last = history["coordinates"][-1]
            geometry = numpy.asarray(getattr(last, "np", last), dtype=float).reshape(-1, 3).tolist()
            energy = history["energy"][-1]
    else:
        energy = psi4.energy(task["method"], molecule=mol)
        n_steps = 0
    if geometry is None:
        geometry = [[float(mol.x(i)), float(mol.y(i)), float(mol.z(i))] for i in range(mol.natom())]
    result.update(success=True, energy=float(energy), n_steps=int(n_steps), geometry=geometry,
                  symbols=[mol.symbol(i) for i in range(mol.natom())])
except Exception as exc:
    message = " ".join(str(exc).split()) or type(exc).__name__
    result["error"] = type(exc).__name__ + ": " + message
with open({RESULT_NAME!r}, "w") as fp:
    json.dump(result, fp)
'''
"""The psithon input file: plain psi4 Python API calls (works with psi4 1.3 to 1.9+)"""


def _n_threads() -> int:
    """Number of threads from OMP_NUM_THREADS (1 if unset or invalid)"""
    n = os.environ.get('OMP_NUM_THREADS', '').strip()
    return int(n) if n.isdigit() and int(n) > 0 else 1


def _geometry_block(molecule: qcel.models.Molecule) -> str:
    """psi4 molecule block (Angstrom, input frame, no symmetry) of a qcelemental molecule"""
    coords = np.asarray(molecule.geometry).reshape(-1, 3) * qcel.constants.bohr2angstroms
    lines = [f'{int(round(molecule.molecular_charge))} {int(molecule.molecular_multiplicity)}']
    lines += [f'{s} {x:.10f} {y:.10f} {z:.10f}' for s, (x, y, z) in zip(molecule.symbols, coords)]
    lines += ['units angstrom', 'symmetry c1', 'no_com', 'no_reorient']
    return '\n'.join(lines)


def _options(molecule: qcel.models.Molecule, spec: QCSpec) -> Dict[str, Any]:
    """psi4 global options of a computation"""
    options = dict(DEFAULT_OPTIONS)
    options['basis'] = spec.basis
    options['reference'] = 'uhf' if int(molecule.molecular_multiplicity) > 1 else 'rhf'
    options['geom_maxiter'] = int(spec.keywords.get('max_steps', 100))
    options.update({k.lower(): v for k, v in spec.keywords.items() if k not in _OUR_KEYWORDS})
    return options


def _tail(path: Path, n: int = 5) -> str:
    """Last non-empty lines of a text file, joined on one line"""
    try:
        lines = [line.strip() for line in path.read_text(errors='replace').splitlines() if line.strip()]
    except OSError:
        return ''
    return ' | '.join(lines[-n:])


def _run(command: List[str], cwd: str, env: Dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run a program in its own process group; kill the whole group if it exceeds the timeout"""
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise
        return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def compute_energy(molecule: qcel.models.Molecule, spec: QCSpec, relax: bool) -> BackendResult:
    """Compute the energy of a molecule with psi4, relaxing its geometry first (optking) if asked

    Args:
        molecule: Molecule (charge and multiplicity are used); single atoms are never relaxed
        spec: QC specification: psi4 method, basis and keywords (see the module docstring)
        relax: Whether to relax the geometry with psi4's optimiser before taking the energy
    Returns:
        Energy (Hartree) of the final geometry, final geometry, optimiser iterations, psi4 version
    Raises:
        QCFailure: psi4 missing, psi4 error (unknown method or basis, no SCF or optimiser
            convergence), or the run exceeded the ``timeout`` keyword
    """
    executable = shutil.which('psi4')
    if executable is None:
        raise QCFailure(PSI4_NOT_FOUND)
    if not spec.basis:
        raise QCFailure(f'psi4 needs a basis set: use "psi4/{spec.method}/<basis>", e.g. "psi4/hf/sto-3g"')
    relax = bool(relax) and len(molecule.symbols) > 1
    timeout = float(spec.keywords.get('timeout', 3600))
    n_threads = _n_threads()
    task = {'geometry': _geometry_block(molecule), 'options': _options(molecule, spec), 'method': spec.method,
            'relax': relax, 'memory': str(spec.keywords.get('memory', '2 GB'))}

    with tempfile.TemporaryDirectory(prefix='moldesign-psi4-') as tmp:
        tmp_path = Path(tmp)
        (tmp_path / INPUT_NAME).write_text(json.dumps(task))
        (tmp_path / 'input.dat').write_text(PSITHON_SCRIPT)
        env = dict(os.environ, PSI_SCRATCH=tmp, OMP_NUM_THREADS=str(n_threads), MKL_NUM_THREADS=str(n_threads))
        command = [executable, '-n', str(n_threads), 'input.dat', 'output.dat']
        logger.debug('Running %s in %s', ' '.join(command), tmp)
        try:
            proc = _run(command, cwd=tmp, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise QCFailure(f'psi4 {spec.method}/{spec.basis} exceeded the time limit of {timeout:g} s '
                            '(keyword "timeout")') from None
        except OSError as exc:
            raise QCFailure(f'psi4 could not be started: {exc}') from None

        result_path = tmp_path / RESULT_NAME
        if not result_path.is_file():
            detail = _tail(tmp_path / 'output.dat') or ' '.join((proc.stderr or proc.stdout or '').split()[-40:])
            raise QCFailure(f'psi4 exited with code {proc.returncode} without a result: {detail}')
        result = json.loads(result_path.read_text())

    if not result['success']:
        raise QCFailure(f'psi4 {spec.method}/{spec.basis} failed: {result.get("error", "unknown error")}')
    final = qcel.models.Molecule(symbols=[s.capitalize() for s in result['symbols']],
                                 geometry=np.asarray(result['geometry']),
                                 molecular_charge=molecule.molecular_charge,
                                 molecular_multiplicity=molecule.molecular_multiplicity,
                                 fix_com=True, fix_orientation=True)
    return BackendResult(energy=float(result['energy']), molecule=final, n_steps=int(result['n_steps']),
                         program_version=str(result['version']))
