"""Greedy selection: the best-scored candidates first (we minimise the objective)."""
from __future__ import annotations

import logging
import math
from typing import Collection, List, Sequence

logger = logging.getLogger(__name__)


def greedy_selection(smiles: Sequence[str], scores: Sequence[float], n: int,
                     exclude: Collection[str] = ()) -> List[str]:
    """Pick the ``n`` candidates with the lowest scores

    Args:
        smiles: Candidate molecules
        scores: Score of each candidate (lower is better), e.g. the predicted objective
        n: Number of molecules to select
        exclude: Molecules to skip (already computed or queued)
    Returns:
        Up to ``n`` distinct SMILES, best first; ties broken by SMILES. Candidates with a NaN
        score are never selected.
    """
    smiles, scores = list(smiles), list(scores)
    if len(smiles) != len(scores):
        raise ValueError(f'Got {len(smiles)} molecules but {len(scores)} scores')
    if n < 0:
        raise ValueError(f'Cannot select a negative number of molecules ({n})')
    exclude = set(exclude)
    ranked = sorted((float(s), m) for m, s in zip(smiles, scores) if not math.isnan(float(s)))
    selected: List[str] = []
    for _, mol in ranked:
        if len(selected) >= n:
            break
        if mol in exclude:
            continue
        exclude.add(mol)
        selected.append(mol)
    return selected
