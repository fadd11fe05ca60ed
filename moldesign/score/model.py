"""Group-contribution model of the atomization energy and the scoring function used by the search.

The model predicts the TOTAL atomization energy (kcal/mol), which is additive in group
contributions; per-atom objectives are derived from it.
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence, Tuple

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import BayesianRidge
from sklearn.pipeline import Pipeline

from moldesign.chem import count_atoms
from moldesign.score.featurize import GroupCountFeaturizer

logger = logging.getLogger(__name__)

OBJECTIVES = ('atomization_energy', 'atomization_energy_per_atom')
"""Objectives the search can minimise (names of AtomizationRecord fields), in kcal/mol"""


def make_model() -> Pipeline:
    """Make an untrained group-contribution model

    No intercept: a group-contribution model is additive, and the atomization energy of no atoms is 0. An
    intercept fit on a few molecules of QM9's size is a large constant that every molecule carries; divided
    by the atom count it made methane (5 atoms) look several times better per atom than it is.

    Returns:
        Pipeline: GroupCountFeaturizer then BayesianRidge (predicts with ``return_std=True``)
    """
    return Pipeline([
        ('featurizer', GroupCountFeaturizer()),
        ('regressor', BayesianRidge(fit_intercept=False)),
    ])


def train_model(smiles: Sequence[str], values: Sequence[float]) -> Pipeline:
    """Fit a fresh model on total atomization energies

    Args:
        smiles: Molecules (SMILES)
        values: Their total atomization energies, kcal/mol
    Returns:
        The fitted pipeline
    """
    smiles = list(smiles)
    values = np.asarray(values, dtype=float)
    if len(smiles) != len(values):
        raise ValueError(f'Got {len(smiles)} molecules but {len(values)} values')
    if len(smiles) < 2:
        raise ValueError(f'Need at least 2 molecules to train a model, got {len(smiles)}')
    if not np.all(np.isfinite(values)):
        raise ValueError('Training values contain NaN or infinity')
    model = make_model()
    model.fit(smiles, values)
    logger.debug(f'Trained a group-contribution model on {len(smiles)} molecules, '
                 f'{len(model["featurizer"].vocabulary_)} features')
    return model


def compute_score(model: Pipeline, smiles: Sequence[str], objective: str = 'atomization_energy',
                  success: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Predict the objective for molecules

    Args:
        model: Fitted model from :func:`train_model`, or a :class:`SteeringModel`
        smiles: Molecules (SMILES)
        objective: One of :data:`OBJECTIVES`
        success: A :class:`SteeringModel`'s :meth:`~SteeringModel.success_probability` of the molecules, if the
            caller has it already (it is not computed twice)
    Returns:
        - Predicted objective (kcal/mol or kcal/mol per atom)
        - Standard deviation of the prediction, same units
    """
    if objective not in OBJECTIVES:
        raise ValueError(f'Unknown objective {objective!r}; choose from {", ".join(OBJECTIVES)}')
    smiles = list(smiles)
    if len(smiles) == 0:
        return np.zeros(0), np.zeros(0)
    mean, std = model.predict(smiles, return_std=True) if success is None else \
        model.predict(smiles, return_std=True, success=success)
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    if objective == 'atomization_energy_per_atom':
        n_atoms = np.array([count_atoms(s) for s in smiles], dtype=float)
        mean, std = mean / n_atoms, std / n_atoms
    return mean, std


class SteeringModel(BaseEstimator, RegressorMixin):
    """What the search believes of a molecule: the search method's energy, corrected toward the verification
    level, and penalised by the probability that QC fails on it

    ``predict`` returns total atomization energies (kcal/mol), like the group-contribution model it wraps, so that
    :func:`compute_score` and MolDQN's reward use it unchanged.

    Args:
        energy: Fitted group-contribution model of the search method's total atomization energy
        delta: Fitted model of (verified - search) total atomization energy, or None
        feasibility: Fitted :class:`~moldesign.score.feasibility.FeasibilityModel`, or None
        penalty: kcal/mol added to the prediction of a molecule certain to fail (see :meth:`failure_weight`)
    """

    def __init__(self, energy: Pipeline, delta: Optional[Pipeline] = None, feasibility: Any = None,
                 penalty: float = 0.):
        self.energy = energy
        self.delta = delta
        self.feasibility = feasibility
        self.penalty = penalty

    def fit(self, X, y=None) -> 'SteeringModel':
        """The parts are fit by :func:`train_steering_model`; nothing to do here"""
        return self

    def predict(self, X: Sequence[str], return_std: bool = False, success: Optional[np.ndarray] = None):
        """Predicted total atomization energy (and its standard deviation)

        Args:
            X: SMILES
            return_std: Also return the standard deviation
            success: :meth:`success_probability` of ``X``, if the caller has it already
        """
        X = list(X)
        mean, std = self.energy.predict(X, return_std=True)
        mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        if self.delta is not None:
            d_mean, d_std = self.delta.predict(X, return_std=True)
            mean, std = mean + d_mean, np.sqrt(std ** 2 + np.asarray(d_std) ** 2)
        if self.feasibility is not None and self.penalty and len(X):
            mean = mean + self.failure_weight(X, success) * self.penalty
        return (mean, std) if return_std else mean

    def failure_weight(self, X: Sequence[str], success: Optional[np.ndarray] = None) -> np.ndarray:
        """Share of the penalty each molecule gets: 0 while failure is less likely than success, rising to 1 for a
        certain failure (an uncertain classifier, early in a run, does not reorder every candidate)"""
        return np.clip(1. - 2. * (self.success_probability(X) if success is None else np.asarray(success)), 0., 1.)

    def success_probability(self, X: Sequence[str]) -> np.ndarray:
        """Probability that QC computes each molecule (1 without a feasibility model)"""
        X = list(X)
        return np.ones(len(X)) if self.feasibility is None else self.feasibility.predict_proba(X)[:, 1]


MIN_VERIFIED = 2
"""Verified molecules needed before the search corrects its model toward the verification level"""


def estimate_verified(delta: Pipeline, smiles: Sequence[str], search_energies: Sequence[float],
                      objective: str = 'atomization_energy') -> np.ndarray:
    """The objective of molecules at the verification level, estimated from their search-level values

    Args:
        delta: Fitted model of (verified - search) total atomization energy (:func:`train_steering_model`)
        smiles: Molecules computed at the search level
        search_energies: Their total atomization energies at the search level (kcal/mol)
        objective: One of :data:`OBJECTIVES`
    Returns:
        Estimated objective at the verification level (kcal/mol, or kcal/mol per atom)
    """
    smiles = list(smiles)
    estimate = np.asarray(search_energies, dtype=float) + np.asarray(delta.predict(smiles), dtype=float)
    if objective == 'atomization_energy_per_atom':
        estimate = estimate / np.array([count_atoms(s) for s in smiles], dtype=float)
    return estimate


def train_steering_model(training: Sequence[Tuple[str, float]], failures: Sequence[str] = (),
                         verified: Sequence[Tuple[str, float]] = (), penalty_scale: float = 2.) -> SteeringModel:
    """Fit everything the search learns from its results

    Args:
        training: (SMILES, total atomization energy, kcal/mol) of every molecule computed by the search method
        failures: Molecules whose QC failed (embedding, relaxation, SCF, ...)
        verified: (SMILES, verified minus search total atomization energy, kcal/mol) of verified molecules
        penalty_scale: The failure penalty, in standard deviations of the training energies
    Returns:
        The model
    """
    smiles = [s for s, _ in training]
    values = [v for _, v in training]
    energy = train_model(smiles, values)
    delta = train_model([s for s, _ in verified], [d for _, d in verified]) if len(verified) >= MIN_VERIFIED else None
    feasibility, penalty = None, 0.
    if failures:
        from moldesign.score.feasibility import FeasibilityModel
        feasibility = FeasibilityModel().fit(smiles + list(failures), [True] * len(smiles) + [False] * len(failures))
        penalty = penalty_scale * float(np.std(values))
    return SteeringModel(energy, delta, feasibility, penalty)
