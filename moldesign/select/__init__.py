"""Choosing which molecules quantum chemistry computes next.

- :class:`~moldesign.select.pool.CandidatePool`: the candidates, their lanes, the queue policy and exclusions
- :func:`~moldesign.select.ranking.rank_candidates`: the screening task (model fit, neighbourhoods, predictions)
- :func:`~moldesign.select.acquisition.acquisition_scores`: greedy, UCB or expected improvement
"""
from moldesign.select.acquisition import ACQUISITIONS, acquisition_scores
from moldesign.select.pool import Candidate, CandidatePool
from moldesign.select.ranking import Ranking, rank_candidates

__all__ = ['ACQUISITIONS', 'acquisition_scores', 'Candidate', 'CandidatePool', 'Ranking', 'rank_candidates']
