"""Which molecules QC can compute: a classifier learned from the campaign's own failures.

A molecule fails QC when RDKit cannot embed it in 3D, or when its bonds break during the relaxation (a strained
polycyclic cage that is not a minimum of the method). Such molecules come in families (the same fused small rings
in many variants), so the atom-centred groups and ring counts that the energy model uses also predict failure.
:class:`FeasibilityModel` is a logistic regression on those features, trained on every computed molecule (label:
the QC task succeeded); the search demotes candidates it deems likely to fail instead of rediscovering them.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from moldesign.score.featurize import GroupCountFeaturizer

logger = logging.getLogger(__name__)


class FeasibilityModel(BaseEstimator, ClassifierMixin):
    """Probability that QC computes a molecule (scikit-learn estimator on SMILES)

    Args:
        C: Inverse regularisation strength of the logistic regression (small: a few failures generalise to their
            family, not to every molecule that shares one common group)
        prior: Probability of success assumed before the first failure (no classifier is fit until there are
            successes and failures)

    Attributes:
        featurizer_: Group counts, fit on the training molecules
        classifier_: The logistic regression, None while all training molecules share one label
        base_rate_: Share of successes in training
    """

    def __init__(self, C: float = 1.0, prior: float = 0.95):
        self.C = C
        self.prior = prior

    def fit(self, X: Sequence[str], y: Sequence[bool]) -> 'FeasibilityModel':
        """Learn from computed molecules

        Args:
            X: SMILES
            y: Whether QC succeeded for each
        Returns:
            self
        """
        X, y = list(X), np.asarray(y, dtype=bool)
        if len(X) != len(y):
            raise ValueError(f'Got {len(X)} molecules but {len(y)} labels')
        self.base_rate_ = float(y.mean()) if len(y) else self.prior
        self.featurizer_ = GroupCountFeaturizer().fit(X)
        self.classifier_ = None
        if y.all() or not y.any():
            return self
        self.classifier_ = LogisticRegression(C=self.C, class_weight='balanced', max_iter=1000)
        self.classifier_.fit(self._features(X), y)
        return self

    def _features(self, X: Sequence[str]) -> np.ndarray:
        return np.log1p(self.featurizer_.transform(list(X)))

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        """Probabilities of failure and success

        Returns:
            Array (n_molecules, 2): column 0 failure, column 1 success
        """
        X = list(X)
        if not hasattr(self, 'featurizer_'):
            raise ValueError('FeasibilityModel is not fitted: call fit first')
        if self.classifier_ is None:  # No failure yet (or no success): the prior
            p = np.full(len(X), self.prior)
        else:
            p = self.classifier_.predict_proba(self._features(X))[:, list(self.classifier_.classes_).index(True)]
        return np.column_stack([1 - p, p]) if len(X) else np.zeros((0, 2))

    def predict(self, X: Sequence[str]) -> np.ndarray:
        """Whether QC is predicted to succeed for each molecule"""
        return self.predict_proba(X)[:, 1] >= 0.5
