"""The screening task of the search: fit the model, enumerate neighbourhoods, predict every candidate.

:func:`rank_candidates` runs on the ``ml`` executor (inputs in, results out), so that the CPU-heavy part of
steering (model fit, neighbourhood enumeration, predicting thousands of candidates) never runs in the thinker.
The thinker's :class:`~moldesign.select.pool.CandidatePool` turns its :class:`Ranking` into the queue order.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from moldesign.sample import neighbourhood
from moldesign.score import compute_score, train_model

logger = logging.getLogger(__name__)


@dataclass
class Ranking:
    """Predictions for a set of candidates, and the model that made them"""

    smiles: List[str]
    """Candidates (those given, then new neighbours), in no particular order"""
    sources: List[str]
    """Source of each candidate: as given, or ``neighbours`` for molecules found by the expansion"""
    mean: np.ndarray
    """Predicted objective of each candidate (kcal/mol or kcal/mol per atom)"""
    std: np.ndarray
    """Standard deviation of each prediction"""
    model: Any
    """The fitted model (also the reward of the next MolDQN call)"""
    n_train: int
    """Molecules the model was fit on"""
    expanded: Dict[str, int] = field(default_factory=dict)
    """Molecules whose neighbourhoods were enumerated, and to what depth"""
    timings: Dict[str, float] = field(default_factory=dict)
    """Seconds spent fitting, expanding and predicting"""


def rank_candidates(training: Sequence[Tuple[str, float]], candidates: Mapping[str, str], objective: str,
                    expand: Optional[Mapping[str, int]] = None) -> Ranking:
    """Fit a group-contribution model on every computed molecule and predict the candidates

    Args:
        training: (SMILES, total atomization energy in kcal/mol) of every successfully computed molecule
        candidates: Candidate SMILES -> source (``moldqn``, ``neighbours``, ...)
        objective: Objective to predict (``atomization_energy`` or ``atomization_energy_per_atom``)
        expand: Molecules whose neighbourhoods (1 or 2 edits away, by depth) join the candidates
    Returns:
        The ranking (candidates and new neighbours, predicted)
    """
    timings = {}
    start = time.perf_counter()
    model = train_model([s for s, _ in training], [v for _, v in training])
    timings['fit'] = time.perf_counter() - start

    start = time.perf_counter()
    found: Dict[str, str] = dict(candidates)
    done = {s for s, _ in training}
    for smiles, depth in (expand or {}).items():
        for neighbour in neighbourhood(smiles, depth):
            if neighbour not in found and neighbour not in done:
                found[neighbour] = 'neighbours'
    timings['expand'] = time.perf_counter() - start

    start = time.perf_counter()
    smiles = list(found)
    mean, std = compute_score(model, smiles, objective)
    timings['predict'] = time.perf_counter() - start
    logger.info(f'Ranked {len(smiles)} candidates ({len(smiles) - len(candidates)} new neighbours) with a model '
                f'fit on {len(training)} molecules')
    return Ranking(smiles=smiles, sources=[found[s] for s in smiles], mean=np.asarray(mean), std=np.asarray(std),
                   model=model, n_train=len(training), expanded=dict(expand or {}), timings=timings)


def warm_up(agent: Any = None) -> Dict[str, float]:
    """Load what the ML tasks need into a fresh worker (run once per ML worker while the first QC results come in)

    Importing RDKit, scikit-learn and TensorFlow and building the MolDQN network take seconds on a fresh
    worker; done here, they no longer delay the first screening and the first MolDQN call.

    Args:
        agent: The MolDQN agent whose network to build (None: screening only)
    Returns:
        Seconds spent: ``screening`` (a tiny model fit and prediction), ``moldqn`` (the network)
    """
    timings = {}
    start = time.perf_counter()
    rank_candidates([('C', -400.), ('CC', -700.), ('CCO', -800.)], {'CCC': 'warm-up'}, 'atomization_energy',
                    expand={'CC': 1})
    timings['screening'] = time.perf_counter() - start
    if agent is not None:
        start = time.perf_counter()
        agent._build_keras()
        timings['moldqn'] = time.perf_counter() - start
    return timings
