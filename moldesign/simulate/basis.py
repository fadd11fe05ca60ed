"""Basis sets shared by the psi4 and PySCF back ends: Cartesian or spherical d/f functions, and
basis sets a program does not ship, taken from the Basis Set Exchange package (offline).

Cartesian or spherical
----------------------
Pople's split-valence basis sets (3-21G, 4-31G, 6-21G, 6-31G and their ``*``, ``+``, ``(d,p)``,
``(2df,p)`` forms; not 6-311G) are conventionally used with Cartesian d functions (6D): Gaussian
does so by default, and QM9 was computed with Gaussian's B3LYP/6-31G(2df,p). psi4's own library
files of the 6-31G family say ``cartesian``; PySCF uses spherical functions unless told
(``gto.M(cart=True)``). Neither program can mix Cartesian d with spherical f (Gaussian's default
for this family is 6D 7F), so both back ends use Cartesian d and f (6D 10F) for the Pople
6-31G family (:func:`uses_cartesian`) and spherical functions for everything else.

Measured (PySCF, B3LYP/6-31G(2df,p) at QM9's geometries, electronic energy U0 - ZPVE of QM9 as
reference): Cartesian water -76.425774 vs QM9 -76.426077, methane -40.525537 vs -40.523679 Ha;
spherical -76.421194 and -40.523113. Atomization energies against QM9's: Cartesian 0.16 (water)
and 0.60 (methane) kcal/mol more bound, spherical 0.56 less and 0.78 kcal/mol more bound.

Basis sets from the Basis Set Exchange
--------------------------------------
The ``basis-set-exchange`` package (PyPI) ships the data of the Basis Set Exchange: no network.
psi4 1.3.2 (Debian) does not ship 6-31G(2df,p); :func:`psi4_basis_file` writes any basis the
package knows in psi4's ``.gbs`` format, under the file name psi4 searches for, and the psi4 back
end supplies it when psi4's library lacks it. :func:`pyscf_basis` does the same for PySCF.
"""
from __future__ import annotations

import functools
import logging
import re
from typing import Dict, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

_CARTESIAN_FAMILY = re.compile(r'^(3-21|4-31|6-21|6-31)\+{0,2}g')
"""Pople basis sets used with Cartesian d functions (6-311G and larger are spherical)"""


def uses_cartesian(basis: Optional[str]) -> bool:
    """Whether a basis set is conventionally used with Cartesian d (and f) functions

    Args:
        basis: Basis set name, e.g. ``6-31g(2df,p)`` (case-insensitive)
    Returns:
        True for the Pople 3-21G, 4-31G, 6-21G and 6-31G families (6-311G excluded), else False
    """
    return bool(basis) and bool(_CARTESIAN_FAMILY.match(basis.strip().lower()))


def psi4_file_name(basis: str) -> str:
    """Name of the ``.gbs`` file psi4 looks for when asked for a basis set (psi4's own mangling)

    Args:
        basis: Basis set name, e.g. ``6-31g(2df,p)``
    Returns:
        File name, e.g. ``6-31g_2df_p_.gbs``
    """
    name = basis.strip().lower()
    for old, new in (('(', '_'), (')', '_'), (',', '_'), ('*', 's'), ('+', 'p')):
        name = name.replace(old, new)
    return name + '.gbs'


@functools.lru_cache(maxsize=64)
def _bse_basis(basis: str, elements: Tuple[str, ...], fmt: str) -> Optional[str]:
    try:
        import basis_set_exchange as bse
    except ImportError:
        logger.debug('basis-set-exchange is not installed: no basis sets beyond the programs\' own')
        return None
    try:
        return bse.get_basis(basis, elements=list(elements), fmt=fmt, header=False)
    except (KeyError, RuntimeError) as exc:  # Unknown basis, or elements it does not cover
        logger.debug(f'Basis Set Exchange has no {basis} for {", ".join(elements)}: {exc}')
        return None


def psi4_basis_file(basis: str, elements: Sequence[str]) -> Optional[Dict[str, str]]:
    """A basis set from the Basis Set Exchange as a psi4 ``.gbs`` file

    The first line (``cartesian`` or ``spherical``) follows :func:`uses_cartesian`.

    Args:
        basis: Basis set name
        elements: Element symbols the file must cover
    Returns:
        ``{"name": file name psi4 searches for, "text": file contents}``, or None if the
        basis-set-exchange package is missing or does not know the basis for these elements
    """
    text = _bse_basis(basis.strip().lower(), tuple(sorted(set(elements))), 'psi4')
    if text is None:
        return None
    lines = text.lstrip().splitlines()
    if lines and lines[0].strip().lower() in ('spherical', 'cartesian'):
        lines = lines[1:]
    header = 'cartesian' if uses_cartesian(basis) else 'spherical'
    return {'name': psi4_file_name(basis), 'text': '\n'.join([header] + lines) + '\n'}


def pyscf_basis(basis: str, elements: Sequence[str]) -> Optional[Dict[str, list]]:
    """A basis set from the Basis Set Exchange in PySCF's internal format

    Args:
        basis: Basis set name
        elements: Element symbols
    Returns:
        ``{element: PySCF basis}`` for ``gto.M(basis=...)``, or None if unavailable
    """
    text = _bse_basis(basis.strip().lower(), tuple(sorted(set(elements))), 'nwchem')
    if text is None:
        return None
    from pyscf import gto
    try:
        return {e: gto.basis.parse(text, symb=e) for e in sorted(set(elements))}
    except Exception as exc:  # pragma: no cover (BSE's NWChem output is what PySCF parses)
        logger.warning(f'PySCF cannot parse the Basis Set Exchange\'s {basis}: {exc}')
        return None
