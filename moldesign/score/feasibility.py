"""Which molecules QC can compute: a classifier learned from the campaign's own failures.

A molecule fails QC when RDKit cannot embed it in 3D, or when its bonds break during the relaxation (a strained
polycyclic cage that is not a minimum of the method). Such molecules come in families (the same fused small rings
in many variants), so the atom-centred groups and ring counts that the energy model uses also predict failure.
:class:`FeasibilityModel` is a logistic regression on those features, trained on every computed molecule (label:
the QC task succeeded); the search demotes candidates it deems likely to fail instead of rediscovering them.

Ring topology says more than the groups about a cage: how many atoms sit in two, three or four rings, how many
rings are 3- or 4-membered, the bridgehead and spiro atoms, rings per heavy atom (:func:`ring_topology`). Judged on
10 per-atom searches in their own order (``bench/failure_signals.py``), the classifier with these counts beside the
groups flags 29 of 69 failures and 35 of 331 successes, the groups alone 22 and 37.

Groups generalise poorly across cage families (each cage has new groups), so :class:`StrainModel` adds a
physical measure: the bonded MMFF94 energy (stretch and bend) per heavy atom of a relaxed conformer
(:func:`~moldesign.simulate.embed.strain_energy`), with the limit above which molecules fail learned from the
campaign's own successes and failures (no fixed threshold: what breaks depends on the QC method). The screening
applies it to the candidates whose embedding it checks.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from rdkit.Chem import rdMolDescriptors
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from moldesign.chem import parse_smiles
from moldesign.score.featurize import GroupCountFeaturizer

logger = logging.getLogger(__name__)


def _check_labels(X: Sequence[str], y: Sequence[bool]) -> Tuple[List[str], np.ndarray]:
    """Molecules and their success labels, as a list and a boolean array of the same length"""
    X, y = list(X), np.asarray(y, dtype=bool)
    if len(X) != len(y):
        raise ValueError(f'Got {len(X)} molecules but {len(y)} labels')
    return X, y


@functools.lru_cache(maxsize=65536)
def ring_topology(smiles: str) -> Tuple[float, ...]:
    """Ring-topology counts of a molecule: atoms in at least 2, 3 and 4 rings (SSSR), 3- and 4-membered rings,
    bridgehead and spiro atoms, and rings per heavy atom"""
    mol = parse_smiles(smiles)
    rings = mol.GetRingInfo()
    memberships = [rings.NumAtomRings(a.GetIdx()) for a in mol.GetAtoms()]
    sizes = [len(r) for r in rings.AtomRings()]
    return (sum(m >= 2 for m in memberships), sum(m >= 3 for m in memberships), sum(m >= 4 for m in memberships),
            sizes.count(3), sizes.count(4), rdMolDescriptors.CalcNumBridgeheadAtoms(mol),
            rdMolDescriptors.CalcNumSpiroAtoms(mol), rings.NumRings() / max(mol.GetNumHeavyAtoms(), 1))


class FeasibilityModel(BaseEstimator, ClassifierMixin):
    """Probability that QC computes a molecule (scikit-learn estimator on SMILES)

    Args:
        C: Inverse regularisation strength of the logistic regression (small: a few failures generalise to their
            family, not to every molecule that shares one common group)
        prior: Probability of success assumed before the first failure (no classifier is fit until there are
            successes and failures)
        topology: Add the :func:`ring_topology` counts to the group counts

    Attributes:
        featurizer_: Group counts, fit on the training molecules
        classifier_: The logistic regression, None while all training molecules share one label
        base_rate_: Share of successes in training
    """

    def __init__(self, C: float = 1.0, prior: float = 0.95, topology: bool = True):
        self.C = C
        self.prior = prior
        self.topology = topology

    def fit(self, X: Sequence[str], y: Sequence[bool]) -> 'FeasibilityModel':
        """Learn from computed molecules

        Args:
            X: SMILES
            y: Whether QC succeeded for each
        Returns:
            self
        """
        X, y = _check_labels(X, y)
        self.base_rate_ = float(y.mean()) if len(y) else self.prior
        self.featurizer_ = GroupCountFeaturizer().fit(X)
        self.classifier_ = None
        if y.all() or not y.any():
            return self
        self.classifier_ = LogisticRegression(C=self.C, class_weight='balanced', max_iter=1000)
        self.classifier_.fit(self._features(X), y)
        return self

    def _features(self, X: Sequence[str]) -> np.ndarray:
        groups = np.log1p(self.featurizer_.transform(list(X)))
        if not self.topology:
            return groups
        return np.hstack([groups, np.log1p(np.array([ring_topology(s) for s in X], dtype=float).reshape(len(X), -1))])

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


MIN_STRAIN_FAILURES = 2
"""Failures with a strain value needed before :class:`StrainModel` learns its own limit"""
PRIOR_STRAIN_LIMIT = 6.6
"""The limit before the campaign's own failures say otherwise (kcal/mol per heavy atom): about QM9's 99th
percentile (600 random QM9 molecules, one MMFF94-relaxed ETKDG conformer each, bonded terms: median 0.6, 99th
percentile 6.6, 99.5th 7.8), so it leaves out about 1 % of QM9 space and the most strained cages"""


class StrainModel(BaseEstimator, ClassifierMixin):
    """Whether QC computes a molecule, from its strain (MMFF94 energy per heavy atom; scikit-learn estimator)

    A one-feature logistic regression on the computed molecules; its decision boundary (failure as likely as
    success, at the campaign's own failure rate: a few failures among many successes draw no limit unless they
    stand far apart) is the strain limit. Molecules whose strain cannot be computed (no embedding, no MMFF
    parameters) are left out of training and predicted feasible (the embedding check judges them).

    Args:
        C: Inverse regularisation strength of the logistic regression
        prior_limit: The limit until the campaign's failures give one (None: no limit until then)
        measure: The strain of a SMILES, None if unknown (default
            :func:`~moldesign.simulate.embed.strain_energy`)

    Attributes:
        limit_: kcal/mol per heavy atom above which a molecule is predicted to fail: learned once there are
            :data:`MIN_STRAIN_FAILURES` failures and a success with a strain and the failures are the more strained;
            else ``prior_limit``
        learned_: Whether ``limit_`` was learned from the data
    """

    def __init__(self, C: float = 1.0, prior_limit: Optional[float] = PRIOR_STRAIN_LIMIT,
                 measure: Optional[Callable[[str], Optional[float]]] = None):
        self.C = C
        self.prior_limit = prior_limit
        self.measure = measure

    def _strain(self, X: Sequence[str]) -> np.ndarray:
        from moldesign.simulate.embed import strain_energy
        measure = self.measure or strain_energy
        return np.array([measure(s) for s in X], dtype=float)  # None -> nan

    def fit(self, X: Sequence[str], y: Sequence[bool]) -> 'StrainModel':
        """Learn the limit from the strain of the computed molecules (computed here, cached per process)

        Args:
            X: SMILES of computed molecules (the latest few hundred are enough: the limit is one number)
            y: Whether QC succeeded for each
        Returns:
            self (``limit_`` and ``learned_`` set)
        """
        X, y = _check_labels(X, y)
        self.limit_: Optional[float] = self.prior_limit
        self.learned_ = False
        if (~y).sum() < MIN_STRAIN_FAILURES:
            return self  # Not worth a strain calculation yet
        strain = self._strain(X)
        known = np.isfinite(strain)
        failed, ok = strain[known & ~y], strain[known & y]
        if len(failed) < MIN_STRAIN_FAILURES or not len(ok) or np.median(failed) <= np.median(ok):
            return self
        classifier = LogisticRegression(C=self.C, max_iter=1000).fit(strain[known, None], y[known])
        slope, intercept = float(classifier.coef_[0, 0]), float(classifier.intercept_[0])
        if slope < 0:  # Success less likely as strain grows: the boundary is the limit
            self.limit_, self.learned_ = -intercept / slope, True
        return self

    def predict(self, X: Sequence[str]) -> np.ndarray:
        """Whether QC is predicted to succeed for each molecule (strain at most the limit, or unknown)"""
        if not hasattr(self, 'limit_'):
            raise ValueError('StrainModel is not fitted: call fit first')
        if self.limit_ is None:
            return np.ones(len(X), dtype=bool)
        strain = self._strain(X)
        return ~(strain > self.limit_)  # nan (unknown) -> feasible
