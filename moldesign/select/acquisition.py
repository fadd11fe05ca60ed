"""Acquisition functions: how a candidate's predicted mean and standard deviation become the score it is ranked by.

We minimise the objective, so every score is "lower is better":

- ``greedy``: the predicted mean (exploit the model);
- ``ucb``: the optimistic bound ``mean - kappa * std`` (a lower confidence bound, for minimisation);
- ``ei``: minus the expected improvement over the best value found so far, ``-E[max(best - Y, 0)]``
  with ``Y ~ Normal(mean, std)``.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
from scipy.stats import norm

logger = logging.getLogger(__name__)

ACQUISITIONS = ('greedy', 'ucb', 'ei')
"""Names of the acquisition functions"""
DEFAULT_KAPPA = 1.0
"""Weight of the standard deviation in the UCB score"""


def acquisition_scores(mean: np.ndarray, std: np.ndarray, method: str = 'greedy', best: Optional[float] = None,
                       kappa: float = DEFAULT_KAPPA) -> np.ndarray:
    """Scores of candidates (lower is better) from the model's predictions

    Args:
        mean: Predicted objective of each candidate
        std: Standard deviation of each prediction
        method: ``greedy``, ``ucb`` or ``ei``
        best: Best (lowest) objective value found so far; needed by ``ei`` (without it, ``ei`` is greedy)
        kappa: Weight of the standard deviation for ``ucb``
    Returns:
        One score per candidate
    Raises:
        ValueError: for an unknown method or mismatched lengths
    """
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    if mean.shape != std.shape:
        raise ValueError(f'Got {mean.shape} means but {std.shape} standard deviations')
    if method == 'greedy' or (method == 'ei' and best is None):
        return mean.copy()
    if method == 'ucb':
        return mean - kappa * std
    if method == 'ei':
        sigma = np.maximum(std, 1e-9)
        z = (best - mean) / sigma
        improvement = (best - mean) * norm.cdf(z) + sigma * norm.pdf(z)
        return -np.maximum(improvement, 0.)
    raise ValueError(f'Unknown acquisition {method!r}; choose from {", ".join(ACQUISITIONS)}')
