"""PySCF back end: Hartree-Fock and DFT (any PySCF exchange-correlation name), density fitting,
restricted for closed shells and unrestricted (UHF/UKS) for open shells; geometries relaxed
with geomeTRIC (``pyscf.geomopt.geometric_solver``).

Keywords of the QC specification understood here (all optional):

- ``density_fit`` (bool, default True): density-fitted integrals (3-5x faster than conventional)
- ``max_steps`` (int, default 100): largest number of geomeTRIC steps
- ``conv_tol`` (float, default 1e-9): SCF energy convergence (Hartree)
- ``max_cycle`` (int, default 100): largest number of SCF iterations; an SCF that does not
  converge in them is restarted from its last density with second-order SCF (``mf.newton()``)
  for as many iterations again (keyword ``second_order``, default True; False reports the failure at once)
- ``max_memory`` (int, MB, default 4000): PySCF's memory budget
- ``cartesian`` (bool): Cartesian (6D 10F) instead of spherical d and f functions; default: Cartesian
  for Pople's 6-31G family (Gaussian's convention, as psi4 does: :mod:`moldesign.simulate.basis`),
  spherical for every other basis set (PySCF's own default)

Basis sets are PySCF's; PySCF itself looks a name it does not ship up in the basis-set-exchange
package (a dependency). B3LYP is PySCF's (libxc) ``b3lyp``: VWN-RPA
correlation as in Gaussian and psi4 (B3LYP with VWN5 is ``b3lyp5``).

PySCF runs OpenMP threads: the number is set from ``OMP_NUM_THREADS`` (PySCF's default otherwise).
geomeTRIC writes files in the working directory: callers run this in a scratch directory
(as :func:`moldesign.simulate.compute_atomization_energy` does).
"""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Dict

import numpy as np
import qcelemental as qcel

from moldesign.simulate.base import BackendResult, QCFailure, QCSpec
from moldesign.simulate.basis import uses_cartesian

logger = logging.getLogger(__name__)

_QUIET_GEOMETRIC_LOG = """[loggers]
keys=root,geometric

[handlers]
keys=null

[formatters]
keys=

[logger_root]
level=NOTSET
handlers=

[logger_geometric]
level=WARNING
handlers=null
qualname=geometric
propagate=0

[handler_null]
class=NullHandler
args=()
"""
"""geomeTRIC logging configuration that silences its (very verbose) progress output"""

HF_NAMES = ('hf', 'scf')
"""Method names that mean Hartree-Fock (anything else is passed to PySCF as an XC functional)"""


def _set_threads() -> None:
    """Make PySCF use at most OMP_NUM_THREADS threads"""
    from pyscf import lib
    n = os.environ.get('OMP_NUM_THREADS')
    if n and n.strip().isdigit() and int(n) > 0:
        lib.num_threads(int(n))


def _make_method(molecule: qcel.models.Molecule, spec: QCSpec):
    """Build the PySCF mean-field object of a molecule"""
    from pyscf import dft, gto, scf

    kw: Dict[str, Any] = spec.keywords
    spin = int(molecule.molecular_multiplicity) - 1
    atoms = [(s, tuple(xyz)) for s, xyz in zip(molecule.symbols, np.asarray(molecule.geometry))]
    cartesian = bool(kw.get('cartesian', uses_cartesian(spec.basis)))
    options = dict(unit='Bohr', charge=int(round(molecule.molecular_charge)), spin=spin, cart=cartesian,
                   symmetry=False, verbose=0, max_memory=int(kw.get('max_memory', 4000)))
    try:
        mol = gto.M(atom=atoms, basis=spec.basis, **options)
    except Exception as exc:  # Unknown basis names raise all sorts of errors
        raise QCFailure(f'PySCF cannot build the molecule with basis {spec.basis!r}: '
                        f'{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}') from None

    method = spec.method.lower()
    if method in HF_NAMES:
        mf = scf.UHF(mol) if spin else scf.RHF(mol)
    else:
        mf = dft.UKS(mol) if spin else dft.RKS(mol)
        mf.xc = method
        try:
            from pyscf.dft import libxc
            libxc.parse_xc(method)
        except Exception:
            raise QCFailure(f'PySCF does not know the method {spec.method!r} '
                            '(use hf or an XC functional name)') from None
    if kw.get('density_fit', True):
        mf = mf.density_fit()
    mf.conv_tol = float(kw.get('conv_tol', 1e-9))
    mf.max_cycle = int(kw.get('max_cycle', 100))
    mf.chkfile = None
    mf.verbose = 0
    return mf


def kw_second_order(spec: QCSpec) -> bool:
    """Whether an SCF that DIIS did not converge is retried with second-order SCF (keyword ``second_order``)"""
    return bool(spec.keywords.get('second_order', True))


def _version() -> str:
    import pyscf
    return pyscf.__version__


def compute_energy(molecule: qcel.models.Molecule, spec: QCSpec, relax: bool) -> BackendResult:
    """Compute the energy of a molecule with PySCF, relaxing its geometry first if asked

    Args:
        molecule: Molecule (charge and multiplicity are used)
        spec: QC specification: method (hf or XC name), basis, keywords
        relax: Whether to relax the geometry (geomeTRIC) before taking the energy
    Returns:
        Energy (Hartree), final geometry, number of optimiser steps, PySCF version
    Raises:
        QCFailure: if the SCF or the relaxation does not converge
    """
    try:
        import pyscf  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        raise QCFailure(f'PySCF is not installed: {exc}') from None
    _set_threads()
    mf = _make_method(molecule, spec)
    symbols = list(molecule.symbols)
    n_steps = 0

    if relax and len(symbols) > 1:
        from pyscf.geomopt import geometric_solver
        energies = []

        def _callback(env):
            energies.append(float(env['energy']))

        max_steps = int(spec.keywords.get('max_steps', 100))
        # geomeTRIC calls logging.config.fileConfig, which replaces the root logger's handlers: restore them
        root = logging.getLogger()
        root_handlers, root_level = root.handlers[:], root.level
        with tempfile.TemporaryDirectory(prefix='moldesign-geometric-') as tmp:
            log_ini = os.path.join(tmp, 'log.ini')
            with open(log_ini, 'w') as fp:
                fp.write(_QUIET_GEOMETRIC_LOG)
            try:
                converged, mol_eq = geometric_solver.kernel(mf, maxsteps=max_steps, callback=_callback,
                                                            assert_convergence=True, logIni=log_ini)
            except RuntimeError as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if 'not converged' in message:
                    message = f'SCF did not converge in {mf.max_cycle} cycles during the relaxation'
                raise QCFailure(f'PySCF {spec.method}/{spec.basis} relaxation failed: {message}') from None
            finally:
                for handler in root.handlers[:]:
                    root.removeHandler(handler)
                for handler in root_handlers:
                    root.addHandler(handler)
                root.setLevel(root_level)
        if not converged:
            raise QCFailure(f'PySCF {spec.method}/{spec.basis} relaxation did not converge in {max_steps} steps')
        n_steps = len(energies)
        geometry = mol_eq.atom_coords(unit='Bohr')
        # Energy at the final geometry: the SCF on the relaxed molecule
        mf = _make_method(molecule.copy(update={'geometry': geometry}), spec)

    energy = float(mf.kernel())
    if not mf.converged and kw_second_order(spec):  # Second-order SCF (Newton) from the DIIS density
        logger.info(f'PySCF {spec.method}/{spec.basis}: DIIS did not converge in {mf.max_cycle} cycles, '
                    'trying second-order SCF')
        newton = mf.newton()
        newton.max_cycle = mf.max_cycle
        energy = float(newton.kernel(dm0=mf.make_rdm1()))
        if not newton.converged:
            raise QCFailure(f'PySCF {spec.method}/{spec.basis} SCF did not converge in {mf.max_cycle} cycles '
                            '(DIIS, then second-order SCF)')
    elif not mf.converged:
        raise QCFailure(f'PySCF {spec.method}/{spec.basis} SCF did not converge in {mf.max_cycle} cycles')
    geometry = mf.mol.atom_coords(unit='Bohr')
    final = qcel.models.Molecule(symbols=symbols, geometry=geometry, molecular_charge=molecule.molecular_charge,
                                 molecular_multiplicity=molecule.molecular_multiplicity, fix_com=True,
                                 fix_orientation=True, fix_symmetry='c1')
    return BackendResult(energy=energy, molecule=final, n_steps=n_steps, program_version=_version())
