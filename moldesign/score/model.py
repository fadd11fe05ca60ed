"""Group-contribution model of the atomization energy and the scoring function used by the search.

The model predicts the TOTAL atomization energy (kcal/mol), which is additive in group
contributions; per-atom objectives are derived from it.
"""
from __future__ import annotations

import logging
from typing import Sequence, Tuple

import numpy as np
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


def compute_score(model: Pipeline, smiles: Sequence[str],
                  objective: str = 'atomization_energy') -> Tuple[np.ndarray, np.ndarray]:
    """Predict the objective for molecules

    Args:
        model: Fitted model from :func:`train_model`
        smiles: Molecules (SMILES)
        objective: One of :data:`OBJECTIVES`
    Returns:
        - Predicted objective (kcal/mol or kcal/mol per atom)
        - Standard deviation of the prediction, same units
    """
    if objective not in OBJECTIVES:
        raise ValueError(f'Unknown objective {objective!r}; choose from {", ".join(OBJECTIVES)}')
    smiles = list(smiles)
    if len(smiles) == 0:
        return np.zeros(0), np.zeros(0)
    mean, std = model.predict(smiles, return_std=True)
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    if objective == 'atomization_energy_per_atom':
        n_atoms = np.array([count_atoms(s) for s in smiles], dtype=float)
        mean, std = mean / n_atoms, std / n_atoms
    return mean, std
