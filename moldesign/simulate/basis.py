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
and 0.60 (methane) kcal/mol more bound, spherical 0.56 less and 0.78 kcal/mol more bound. Atoms
(Cartesian) against QM9's: H exact (-0.500273), C, N, F 0.9-1.9 mHa lower, O 0.6 mHa higher.
On a 9-heavy-atom QM9 molecule (``CC(O)C1OCC1CO``, 21 atoms, at its GFN2-xTB geometry) the
atomization energy is 2.6 kcal/mol (0.12 per atom) more bound than QM9's with Cartesian functions
and 9.2 (0.44 per atom) with spherical ones; the Cartesian single point takes 1.6x as long
(PySCF, one core: 339 s against 210 s; psi4 with density fitting 303 s, within 0.09 kcal/mol
of PySCF).

Neither matches QM9 exactly, and 6D 10F against Gaussian's 6D 7F is not the only difference: the
d exponents of 6-31G(2df,p) in PySCF and the Basis Set Exchange (e.g. C 1.252 and 0.313) are the
6-311G** ones split in two, where Gaussian and Q-Chem split the 6-31G** exponent 0.8 into 1.6 and
0.4 (Basis Set Exchange issue #54 and its open pull request #339). With those exponents (PySCF,
Cartesian) the atoms came out 1.6-3.0 mHa below QM9's and water's atomization energy 0.58,
methane's 0.29 kcal/mol more bound: no closer overall, so both back ends keep PySCF's exponents,
and they agree with each other (psi4 and PySCF water within 2e-6 Ha).

Basis sets from the Basis Set Exchange
--------------------------------------
The ``basis-set-exchange`` package (PyPI) ships the data of the Basis Set Exchange: no network.
psi4 1.3.2 (Debian) does not ship 6-31G(2df,p); :func:`psi4_basis_file` writes any basis the
package knows in psi4's ``.gbs`` format, under the file name psi4 searches for, and the psi4 back
end supplies it when psi4's library lacks it (PySCF looks names it lacks up in the package itself).
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


BSE_CORRECTIONS: Dict[str, Dict[str, str]] = {'6-31g(2df,p)': {'H': '6-31g**', 'He': '6-31g**'}}
"""Elements whose functions are taken from another basis set of the Basis Set Exchange: its
6-31G(2df,p) (basis-set-exchange 0.12, "data from the original Basis Set Exchange") has two p
functions on hydrogen (exponents 1.5 and 0.375) where Gaussian, Q-Chem and PySCF have the one p of
6-31G** (exponent 1.1) (Basis Set Exchange issue #330). Measured: psi4 B3LYP/6-31G(2df,p) water
2.6 mHa below QM9's energy with the two p functions; with the one p psi4 agrees with PySCF."""


@functools.lru_cache(maxsize=64)
def _bse_basis(basis: str, elements: Tuple[str, ...], fmt: str) -> Optional[Tuple[Tuple[Tuple[str, ...], str], ...]]:
    """Texts of a basis set from the Basis Set Exchange, one per source basis set (see :data:`BSE_CORRECTIONS`)

    Returns:
        ``((elements, text), ...)``, or None if the package is missing or lacks the basis for an element
    """
    try:
        import basis_set_exchange as bse
    except ImportError:
        logger.debug('basis-set-exchange is not installed: no basis sets beyond the programs\' own')
        return None
    corrections = BSE_CORRECTIONS.get(basis, {})
    groups: Dict[str, list] = {}
    for element in elements:
        groups.setdefault(corrections.get(element, basis), []).append(element)
    try:
        return tuple((tuple(members), bse.get_basis(name, elements=members, fmt=fmt, header=False))
                     for name, members in groups.items())
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
    parts = _bse_basis(basis.strip().lower(), tuple(sorted(set(elements))), 'psi4')
    if parts is None:
        return None
    blocks = []  # one per element: the lines between two '****'
    for _, text in parts:
        lines = [line.rstrip() for line in text.splitlines()]
        marks = [i for i, line in enumerate(lines) if line.strip() == '****']
        blocks += ['\n'.join(lines[i + 1:j]) for i, j in zip(marks, marks[1:])]
    header = 'cartesian' if uses_cartesian(basis) else 'spherical'
    return {'name': psi4_file_name(basis), 'text': f'{header}\n\n****\n' + '\n****\n'.join(blocks) + '\n****\n'}
