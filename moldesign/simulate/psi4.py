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
(``geometry``, ``set_options``, ``energy``, ``optimize(return_history=True)``, ``core.clean``,
``core.clean_options``, ``core.get_datadir``, ``core.get_memory``, ``core.BasisSet.build``),
so the same path works with Debian's psi4 1.3.2 and with current conda-forge psi4 (1.9+) on a
cluster, whatever Python the worker runs.

Method names are psi4's (``hf``, ``b3lyp``, ...), basis names are psi4's (``sto-3g``, ``6-31g*``).
Closed shells use ``reference rhf``; open shells (the isolated atoms, multiplicity > 1) use
``reference uhf`` (UKS for DFT methods). The molecule is kept in its input frame
(``no_com``, ``no_reorient``, ``symmetry c1``). psi4's B3LYP is Gaussian's (VWN-RPA correlation),
as is PySCF's ``b3lyp``: the two agree to 1e-6 Ha on the atoms at the same basis.

Basis sets: psi4's library first. A basis set psi4 does not ship (Debian's psi4 1.3.2 has no
6-31G(2df,p), the basis of QM9) is written into the run's directory from the basis-set-exchange
package (:func:`moldesign.simulate.basis.psi4_basis_file`), where psi4 looks first. Cartesian or
spherical d and f functions: psi4 takes them from the basis file; psi4's own 6-31G-family files
are Cartesian (6D, Gaussian's convention) and the supplied ones follow
:func:`moldesign.simulate.basis.uses_cartesian` (Cartesian for the 6-31G family, spherical
otherwise), so psi4 and PySCF use the same functions. psi4's ``puream`` option overrides it.

SCF convergence: when psi4 raises ``SCFConvergenceError`` the computation is repeated, in the
same psi4 process, down the ladder :data:`SCF_LADDER`: density convergence 1e-6 (psi4's own
default for energies; the energy criterion stays), then a GWH guess with damping (and a level
shift where psi4 has one: 1.4+), then second-order SCF. Measured with Debian's psi4 1.3.2 and
``OMP_NUM_THREADS=1``: the UKS F atom at B3LYP/6-31G* converges its energy to 1e-13 Ha in 9
iterations but its orbital gradient stalls at 1.6e-8, above ``d_convergence`` 1e-8, so the
first attempt fails after 100 iterations (5.6 s) and the second converges (0.6 s, same energy).
When every attempt fails, the one-line :class:`~moldesign.simulate.base.QCFailure` lists them
and says what to try.

Keywords of the QC specification understood here (all optional):

- ``timeout`` (float, seconds, default 3600): wall-time limit of one psi4 run; the run is killed
  and :class:`~moldesign.simulate.base.QCFailure` raised when it is exceeded
- ``memory`` (str, default ``"2 GB"``): psi4's memory budget
- ``max_steps`` (int, default 100): largest number of optimiser iterations (``geom_maxiter``)
- ``scf_ladder`` (bool, default True): retry SCF convergence failures down :data:`SCF_LADDER`
- any other key is passed to psi4 as a global option (``psi4.set_options``), e.g.
  ``{"scf_type": "df"}``. Default options: ``e_convergence 1e-8``, ``d_convergence 1e-8`` and
  ``scf_type auto`` (ours, not psi4's): ``pk``, exact integrals, so energies agree with other
  programs to 1e-6 Ha, when PK's integral supermatrix fits in half of ``memory``; else ``df``
  (density fitting, psi4's own default). Measured: a 9-heavy-atom molecule at B3LYP/6-31G(2df,p)
  (339 Cartesian functions, 13 GB of PK integrals) spent 14 min writing its PK integrals to disk
  before the first SCF iteration; atoms and water stay PK. Density fitting changes total energies
  by 1e-5 Ha at 6-31G(2df,p) (water, atoms), 1e-4 Ha at STO-3G.

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
from typing import Any, Dict, List, Tuple

import numpy as np
import qcelemental as qcel

from moldesign.simulate.base import BackendResult, QCFailure, QCSpec
from moldesign.simulate.basis import psi4_basis_file

logger = logging.getLogger(__name__)

PSI4_NOT_FOUND = ('psi4 not found on PATH: install it '
                  '(conda install -c conda-forge psi4, or apt-get install psi4)')
"""Message of the failure raised when psi4 is missing"""

DEFAULT_OPTIONS: Dict[str, Any] = {'scf_type': 'auto', 'e_convergence': 1e-8, 'd_convergence': 1e-8}
"""psi4 options set unless the specification's keywords override them"""

_OUR_KEYWORDS = ('timeout', 'memory', 'max_steps', 'scf_ladder')
"""Keywords consumed by this module (the others go to psi4)"""

SCF_LADDER: List[Tuple[str, Dict[str, Any]]] = [
    ('as configured', {}),
    ('d_convergence 1e-6', {'d_convergence': 1e-6}),
    ('GWH guess + 20% damping + level shift, 200 iterations',
     {'d_convergence': 1e-6, 'guess': 'gwh', 'damping_percentage': 20, 'maxiter': 200, 'level_shift': 0.2}),
    ('SAD guess + second-order SCF, 50 iterations',
     {'d_convergence': 1e-6, 'guess': 'sad', 'soscf': True, 'soscf_max_iter': 10, 'maxiter': 50}),
]
"""SCF attempts, in order, after an SCF convergence failure: (label, psi4 options added to the task's)"""

OPTIONAL_OPTIONS = ('level_shift',)
"""Options of the ladder that older psi4 versions do not have (psi4 1.3 has no level shift): skipped there"""

SCF_HINT = ('try keywords such as {"maxiter": 300, "damping_percentage": 50, "guess": "core"}, '
            'or the same method with pyscf/ or nwchem/')
"""What to try when every SCF attempt failed (ends the one-line failure message)"""

INPUT_NAME = 'moldesign_input.json'
RESULT_NAME = 'moldesign_result.json'

PSITHON_SCRIPT = f'''# moldesign psi4 driver: reads {INPUT_NAME}, writes {RESULT_NAME}
import json
import os
import time
import numpy
import psi4

with open({INPUT_NAME!r}) as fp:
    task = json.load(fp)
result = {{"success": False, "version": str(psi4.__version__), "attempts": [], "times": [], "basis_files": []}}


def run(options):
    # One psi4 computation from the input geometry with these options; returns energy, steps, geometry, molecule
    psi4.core.clean()
    psi4.core.clean_options()
    mol = psi4.geometry(task["geometry"])
    options_ = dict(task["options"])
    if options_.get("scf_type") == "auto":  # exact (PK) integrals when their supermatrix fits in half the memory
        del options_["scf_type"]
        psi4.set_options(options_)
        n_bf = psi4.core.BasisSet.build(mol, "ORBITAL", options_["basis"]).nbf()
        pairs = n_bf * (n_bf + 1) // 2
        options_["scf_type"] = "pk" if 8 * pairs * (pairs + 1) // 2 < 0.5 * psi4.core.get_memory() else "df"
        result.update(scf_type=options_["scf_type"], n_basis_functions=n_bf)
    psi4.set_options(options_)
    for key, value in options.items():
        try:
            psi4.set_options({{key: value}})
        except Exception:  # an option this psi4 version does not have (e.g. level_shift before 1.4)
            if key not in task["optional"]:
                raise
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
    return energy, n_steps, geometry, mol


try:
    psi4.set_memory(task["memory"])
    # Basis sets psi4 does not ship: written where psi4 looks first (the working directory)
    folders = [os.path.join(psi4.core.get_datadir(), "basis")]
    folders += [p for p in os.environ.get("PSIPATH", "").split(os.pathsep) if p]
    for basis_file in task["basis_files"]:
        if not any(os.path.isfile(os.path.join(f, basis_file["name"])) for f in folders):
            with open(basis_file["name"], "w") as fp:
                fp.write(basis_file["text"])
            result["basis_files"].append(basis_file["name"])
    for label, options in task["ladder"]:
        start = time.time()
        try:
            energy, n_steps, geometry, mol = run(options)
        except Exception as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            result["error"] = type(exc).__name__ + ": " + message
            result["attempts"].append(label)
            result["times"].append(time.time() - start)
            if type(exc).__name__ != "SCFConvergenceError":
                break
            continue
        result["attempts"].append(label)
        result["times"].append(time.time() - start)
        result.update(success=True, energy=float(energy), n_steps=int(n_steps), geometry=geometry,
                      symbols=[mol.symbol(i) for i in range(mol.natom())])
        result.pop("error", None)
        break
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


def _formula(molecule: qcel.models.Molecule) -> str:
    """Short name of a molecule for messages, e.g. ``F (multiplicity 2)`` or ``H2O``"""
    formula = molecule.get_molecular_formula()
    multiplicity = int(molecule.molecular_multiplicity)
    return f'{formula} (multiplicity {multiplicity})' if multiplicity > 1 else formula


def _failure_message(result: Dict[str, Any], spec: QCSpec, molecule: qcel.models.Molecule) -> str:
    """One-line message of a failed psi4 run, with what to try"""
    error = result.get('error', 'unknown error')
    attempts = result.get('attempts', [])
    if error.startswith('SCFConvergenceError'):
        tried = '; '.join(attempts)
        return (f'psi4 {spec.method}/{spec.basis} SCF of {_formula(molecule)} did not converge in '
                f'{len(attempts)} attempt(s) ({tried}): {SCF_HINT}')
    if error.startswith('BasisSetNotFound'):
        return (f'psi4 {result.get("version", "")} has no basis set {spec.basis!r} for '
                f'{", ".join(sorted(set(molecule.symbols)))}, nor has the basis-set-exchange package '
                '(pip install basis-set-exchange; check the name)')
    return f'psi4 {spec.method}/{spec.basis} failed: {error}'


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
    ladder = SCF_LADDER if spec.keywords.get('scf_ladder', True) else SCF_LADDER[:1]
    basis_file = psi4_basis_file(spec.basis, list(molecule.symbols))
    task = {'geometry': _geometry_block(molecule), 'options': _options(molecule, spec), 'method': spec.method,
            'relax': relax, 'memory': str(spec.keywords.get('memory', '2 GB')), 'ladder': ladder,
            'optional': list(OPTIONAL_OPTIONS), 'basis_files': [basis_file] if basis_file else []}

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

    if 'scf_type' in result:
        logger.debug(f'psi4 scf_type {result["scf_type"]} for {result["n_basis_functions"]} basis functions')
    for name in result.get('basis_files', []):
        logger.debug(f'psi4 {result["version"]} has no {name}: supplied from the Basis Set Exchange')
    attempts = result.get('attempts', [])
    if not result['success']:
        raise QCFailure(_failure_message(result, spec, molecule))
    if len(attempts) > 1:
        times = ', '.join(f'{t:.1f}' for t in result.get('times', []))
        logger.warning(f'psi4 {spec.method}/{spec.basis} SCF of {_formula(molecule)} converged only with '
                       f'"{attempts[-1]}" (attempt {len(attempts)}; attempts took {times} s)')
    final = qcel.models.Molecule(symbols=[s.capitalize() for s in result['symbols']],
                                 geometry=np.asarray(result['geometry']),
                                 molecular_charge=molecule.molecular_charge,
                                 molecular_multiplicity=molecule.molecular_multiplicity,
                                 fix_com=True, fix_orientation=True)
    return BackendResult(energy=float(result['energy']), molecule=final, n_steps=int(result['n_steps']),
                         program_version=str(result['version']))
