"""The screening task of the search: fit the model, enumerate neighbourhoods, predict every candidate.

:func:`rank_candidates` runs on the ``ml`` executor (inputs in, results out), so that the CPU-heavy part of
steering (model fit, neighbourhood enumeration, predicting thousands of candidates) never runs in the thinker.
The thinker's :class:`~moldesign.select.pool.CandidatePool` turns its :class:`Ranking` into the queue order.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from moldesign.chem import violates_bredt
from moldesign.sample import neighbourhood
from moldesign.score import StrainModel, compute_score, train_steering_model
from moldesign.simulate.embed import can_embed

logger = logging.getLogger(__name__)

STRAIN_TRAINING = 200
"""The strain limit is learned from at most this many of the latest successes and of the latest failures"""
LIKELY_SUCCESS = 0.6
"""Candidates with a lower probability of QC success (the feasibility classifier's) come last in their batch
(:class:`~moldesign.select.pool.CandidatePool`), so the check skips them and checks the ones the queue dispenses
first. Above 0.5 on purpose: the classifier weighs failures and successes equally (``class_weight='balanced'``)
while failures are the rarer class, and a QC failure costs an evaluation that finds nothing"""


@dataclass
class Ranking:
    """Predictions for a set of candidates, and the model that made them"""

    smiles: List[str]
    """Candidates (those given, then new neighbours), in no particular order"""
    sources: List[str]
    """Source of each candidate: as given, or ``neighbours`` for molecules found by the expansion"""
    mean: np.ndarray
    """Predicted objective of each candidate (kcal/mol or kcal/mol per atom; likely QC failures penalised)"""
    std: np.ndarray
    """Standard deviation of each prediction"""
    model: Any
    """The fitted :class:`~moldesign.score.model.SteeringModel` (also the reward of the next MolDQN call)"""
    n_train: int
    """Molecules the model was fit on"""
    success: Optional[np.ndarray] = None
    """Probability that QC computes each candidate (the model's feasibility classifier; None: no failure yet)"""
    expanded: Dict[str, int] = field(default_factory=dict)
    """Molecules whose neighbourhoods were enumerated, and to what depth"""
    feasible: List[str] = field(default_factory=list)
    """Candidates checked here that RDKit embeds in 3D"""
    infeasible: List[str] = field(default_factory=list)
    """Candidates checked here that RDKit cannot embed, that break Bredt's rule or that are more strained than the
    learned limit: never to be computed"""
    timings: Dict[str, float] = field(default_factory=dict)
    """Seconds spent fitting, expanding, predicting and checking"""
    strain_limit: Optional[float] = None
    """The learned strain limit (kcal/mol per heavy atom) the check applied, None if none yet"""


def rank_candidates(training: Sequence[Tuple[str, float]], candidates: Mapping[str, str], objective: str,
                    expand: Optional[Mapping[str, int]] = None, failures: Sequence[str] = (),
                    verified: Sequence[Tuple[str, float]] = (), check_top: int = 0,
                    checked: Collection[str] = (), enough: int = 0) -> Ranking:
    """Fit the search's model on every computed molecule and predict the candidates

    Args:
        training: (SMILES, total atomization energy in kcal/mol) of every successfully computed molecule
        candidates: Candidate SMILES -> source (``moldqn``, ``neighbours``, ...)
        objective: Objective to predict (``atomization_energy`` or ``atomization_energy_per_atom``)
        expand: Molecules whose neighbourhoods (1 or 2 edits away, by depth) join the candidates
        failures: Molecules whose QC failed (the model learns which candidates are likely to fail)
        verified: (SMILES, verified minus search total atomization energy) of the molecules verified at a higher
            level (the model is corrected toward that level)
        check_top: Try an RDKit embedding of this many of the best-predicted candidates (those not in ``checked``,
            and not those below :data:`LIKELY_SUCCESS`, which the queue puts last);
            candidates met on the way that break Bredt's rule (:func:`~moldesign.chem.violates_bredt`) are
            infeasible without an embedding attempt, and so are those more strained than the limit learned from
            the failures so far (:class:`~moldesign.score.feasibility.StrainModel`; once there is a limit, the
            ``checked`` candidates are checked against it too)
        checked: Candidates already found embeddable
        enough: Stop checking once this many of the best candidates are found feasible (0: check ``check_top``)
    Returns:
        The ranking (candidates and new neighbours, predicted)
    """
    timings = {}
    start = time.perf_counter()
    model = train_steering_model(training, failures, verified)
    timings['fit'] = time.perf_counter() - start

    start = time.perf_counter()
    found: Dict[str, str] = dict(candidates)
    done = {s for s, _ in training} | set(failures)
    for smiles, depth in (expand or {}).items():
        for neighbour in neighbourhood(smiles, depth):
            if neighbour not in found and neighbour not in done:
                found[neighbour] = 'neighbours'
    timings['expand'] = time.perf_counter() - start

    start = time.perf_counter()
    smiles = list(found)
    success = model.success_probability(smiles) if model.feasibility is not None else None
    mean, std = compute_score(model, smiles, objective, success=success)
    timings['predict'] = time.perf_counter() - start

    start = time.perf_counter()
    feasible, infeasible, embedded = [], [], 0
    strain_limit = None
    if check_top:
        succeeded, failed = [s for s, _ in training][-STRAIN_TRAINING:], list(failures)[-STRAIN_TRAINING:]
        strain = StrainModel().fit(succeeded + failed, [True] * len(succeeded) + [False] * len(failed))
        strain_limit = strain.limit_
        known = set(checked)
        for i in np.argsort(mean, kind='stable'):
            if embedded >= check_top or enough and len(feasible) >= enough:
                break
            if smiles[i] in known:  # Found embeddable before: only the strain limit (learned since) to check
                if strain_limit is not None and not strain.predict([smiles[i]])[0]:
                    infeasible.append(smiles[i])
                continue
            if success is not None and success[i] < LIKELY_SUCCESS:  # Dispensed after the others: not checked now
                continue
            if violates_bredt(smiles[i]):  # Milliseconds: does not count as a check
                infeasible.append(smiles[i])
                continue
            embedded += 1
            ok = can_embed(smiles[i]) and strain.predict([smiles[i]])[0]
            (feasible if ok else infeasible).append(smiles[i])
    timings['check'] = time.perf_counter() - start
    limit = '' if strain_limit is None else f' or are strained beyond {strain_limit:.1f} kcal/mol per heavy atom'
    logger.info(f'Ranked {len(smiles)} candidates ({len(smiles) - len(candidates)} new neighbours) with a model '
                f'fit on {len(training)} molecules; {len(infeasible)} of {len(feasible) + len(infeasible)} checked '
                f'cannot be embedded{limit}')
    return Ranking(smiles=smiles, sources=[found[s] for s in smiles], mean=np.asarray(mean), std=np.asarray(std),
                   success=success, model=model, n_train=len(training), expanded=dict(expand or {}), feasible=feasible,
                   infeasible=infeasible, timings=timings, strain_limit=strain_limit)


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
