"""QC specifications, the back-end protocol and the failure type shared by every QC program.

A QC specification (:class:`QCSpec`) names a program, a method, a basis and keywords, in the
terms of QCSchema (see :meth:`QCSpec.qcschema_model`). It is written to
``qc_spec.json`` in each run directory and is named on the command line with a short string::

    xtb                              GFN2-xTB with tblite, geometry relaxed with ASE (the default)
    pyscf/hf/sto-3g                  PySCF, relaxed with geomeTRIC
    pyscf/b3lyp/6-31g(2df,p)//xtb    PySCF single point on the GFN2-xTB geometry
    psi4/b3lyp/6-31g*                psi4, relaxed with psi4's own optimiser
    nwchem/hf/sto-3g                 NWChem through QCEngine

Every back end is a module of this package that provides one function::

    compute_energy(molecule: qcelemental.models.Molecule, spec: QCSpec, relax: bool) -> BackendResult

which computes the energy of ``molecule`` (relaxing its geometry first when ``relax`` is true)
and raises :class:`QCFailure` with a one-line message when the computation fails.
Back ends honour ``OMP_NUM_THREADS`` and never start more threads than that.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

import qcelemental as qcel
from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)

PROGRAMS = ('xtb', 'pyscf', 'psi4', 'nwchem')
"""QC programs that have a back end"""

SPIN_MULTIPLICITY = {'H': 2, 'C': 3, 'N': 4, 'O': 3, 'F': 2}
"""Ground-state spin multiplicity of the isolated atoms of the search space"""


class QCFailure(RuntimeError):
    """A QC computation that did not produce an energy (no embedding, no convergence, program error)"""


class QCSpec(BaseModel):
    """What QC program, method and basis computes energies, and how geometries are obtained"""

    name: str = Field(..., description='Short name of the specification, e.g. "xtb" or "pyscf/hf/sto-3g"')
    program: str = Field(..., description='QC program: ' + ', '.join(PROGRAMS))
    method: str = Field(..., description='Method, e.g. "gfn2-xtb", "hf", "b3lyp"')
    basis: Optional[str] = Field(None, description='Basis set, e.g. "sto-3g" (None for xtb)')
    keywords: Dict[str, Any] = Field(default_factory=dict, description='Program-specific keywords')
    relax: bool = Field(True, description='Relax the geometry with this method before taking its energy')
    geometry_spec: Optional['QCSpec'] = Field(
        None, description='If set, relax with this (cheaper) specification, then compute a single point with this one')

    def qcschema_model(self) -> qcel.models.Model:
        """Method and basis as a QCSchema model (qcelemental models are pydantic v1, so not nested here)"""
        return qcel.models.Model(method=self.method, basis=self.basis)


@dataclass
class BackendResult:
    """What a back end returns for one molecule"""

    energy: float
    """Total energy (Hartree) of the final geometry"""
    molecule: qcel.models.Molecule
    """Final geometry (relaxed if a relaxation was requested)"""
    n_steps: int
    """Number of optimiser steps (0 for a single point)"""
    program_version: str
    """Version of the QC program"""


KNOWN_KEYWORDS = {
    'xtb': ('accuracy', 'alpha', 'fmax', 'max_steps', 'model_hessian', 'optimizer', 'spin_polarization'),
    'pyscf': ('cartesian', 'conv_tol', 'density_fit', 'max_cycle', 'max_memory', 'max_steps', 'second_order'),
}
"""Keywords of the back ends that take no others (psi4 and NWChem pass unknown keywords to the program)"""


def get_spec(name: str, **keywords) -> QCSpec:
    """Build a QC specification from its short name

    Args:
        name: ``program[/method[/basis]][//geometry-spec-name]``, e.g. ``xtb``, ``pyscf/hf/sto-3g``,
            ``pyscf/b3lyp/6-31g(2df,p)//xtb``
        keywords: Program-specific keywords
    Returns:
        The specification
    Raises:
        ValueError: if the name is malformed or names an unknown program
    """
    name = name.strip()
    main, _, geom_name = name.partition('//')
    parts = main.split('/')
    program = parts[0].lower()
    if program not in PROGRAMS:
        raise ValueError(f'Unknown QC program {program!r} in QC specification {name!r} (known: {", ".join(PROGRAMS)})')
    if program == 'xtb':
        if len(parts) > 2 or (len(parts) == 2 and parts[1].lower() != 'gfn2-xtb'):
            raise ValueError(f'QC specification {name!r}: xtb supports only "xtb" or "xtb/gfn2-xtb"')
        method, basis = 'gfn2-xtb', None
    else:
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ValueError(f'QC specification {name!r} must be "{program}/<method>/<basis>", '
                             f'e.g. "{program}/hf/sto-3g"')
        method, basis = parts[1].lower(), parts[2].lower()
    unknown = sorted(set(keywords) - set(KNOWN_KEYWORDS.get(program, keywords)))
    if unknown:
        raise ValueError(f'Unknown keyword(s) {", ".join(unknown)} for {program} '
                         f'(known: {", ".join(KNOWN_KEYWORDS[program])})')
    geometry_spec = get_spec(geom_name) if geom_name else None
    if geometry_spec is not None and geometry_spec.geometry_spec is not None:
        raise ValueError(f'QC specification {name!r}: only one "//" is allowed')
    return QCSpec(name=name, program=program, method=method, basis=basis,
                  keywords=dict(keywords), relax=geometry_spec is None, geometry_spec=geometry_spec)


def get_backend(program: str):
    """Import the back-end module of a QC program

    Args:
        program: Name of the program
    Returns:
        Module with a ``compute_energy`` function
    """
    if program not in PROGRAMS:
        raise ValueError(f'Unknown QC program {program!r} (known: {", ".join(PROGRAMS)})')
    return importlib.import_module(f'moldesign.simulate.{program}')
