"""Checking a QC specification before a campaign starts: a wrong method, basis or missing program is one line.

What can be known on the thinker's host is checked: PySCF's method and basis names (PySCF is installed
everywhere), and, when the workers run on this host, that the QC program is installed. A psi4 or NWChem basis
name is checked by the program itself, on the workers.
"""
from __future__ import annotations

import importlib.util
import logging
import shutil

from moldesign.chem import ALLOWED_ELEMENTS
from moldesign.simulate.base import QCSpec

logger = logging.getLogger(__name__)

EXECUTABLES = {'psi4': 'psi4', 'nwchem': 'nwchem'}
"""Programs run as executables (found on PATH)"""


def validate_spec(spec: QCSpec, local_workers: bool = True) -> None:
    """Check a QC specification (and its geometry specification)

    Args:
        spec: The specification
        local_workers: Whether the QC workers run on this host (then the program must be installed here)
    Raises:
        ValueError: one line saying what is wrong and what to do
    """
    for part in (spec, spec.geometry_spec):
        if part is None:
            continue
        if part.program == 'pyscf':
            _check_pyscf(part)
        elif part.program == 'xtb':
            if importlib.util.find_spec('tblite') is None:
                raise ValueError('xtb needs the tblite Python package (pip install tblite)')
        elif local_workers and shutil.which(EXECUTABLES[part.program]) is None:
            raise ValueError(f'{part.program} is not installed on this host (not found on PATH); install it '
                             f'(conda install -c conda-forge {part.program}, or apt-get install {part.program}) '
                             f'or choose another --qc')


def _check_pyscf(spec: QCSpec) -> None:
    from pyscf import gto
    from pyscf.dft import libxc

    if spec.method not in ('hf', 'scf'):
        try:
            libxc.parse_xc(spec.method)
        except Exception:
            raise ValueError(f'PySCF does not know the method {spec.method!r} (use hf or an exchange-correlation '
                             'functional name such as b3lyp, pbe0, wb97x)') from None
    for element in ALLOWED_ELEMENTS:
        try:
            basis = gto.basis.load(spec.basis, element)
        except Exception:
            basis = None
        if not basis:
            raise ValueError(f'PySCF has no basis set {spec.basis!r} for {element} (e.g. sto-3g, 6-31g*, '
                             '6-31g(2df,p), cc-pvdz, def2-svp)')
