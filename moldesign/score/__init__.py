"""Fast surrogate models (group contributions) that score molecules for the search."""
from moldesign.score.featurize import GroupCountFeaturizer, OTHER, count_groups
from moldesign.score.model import OBJECTIVES, compute_score, make_model, train_model

__all__ = ['GroupCountFeaturizer', 'OTHER', 'count_groups', 'OBJECTIVES', 'compute_score', 'make_model', 'train_model']
