"""Fast surrogate models (group contributions) that score molecules for the search."""
from moldesign.score.featurize import GroupCountFeaturizer, OTHER, count_groups
from moldesign.score.feasibility import FeasibilityModel, StrainModel
from moldesign.score.model import (OBJECTIVES, SteeringModel, compute_score, estimate_verified, make_model,
                                   train_model, train_steering_model)

__all__ = ['GroupCountFeaturizer', 'OTHER', 'count_groups', 'OBJECTIVES', 'compute_score', 'make_model', 'train_model',
           'FeasibilityModel', 'StrainModel', 'SteeringModel', 'train_steering_model', 'estimate_verified']
