"""Generating candidate molecules with the MolDQN agent, and random-walk baselines.

These functions run on the ``ml`` worker: inputs in, results out (the agent travels both ways).
"""
from __future__ import annotations

import contextlib
import logging
import random
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from moldesign.sample.agent import DQNAgent, Transition
from moldesign.sample.environment import EMPTY, MoleculeEnv
from moldesign.score import OBJECTIVES, compute_score

logger = logging.getLogger(__name__)

DEFAULT_MAX_STEPS = 12
"""Steps per episode: enough to build a 9-heavy-atom molecule from nothing and then edit it"""


def _single_threaded_blas():
    """Run numpy's BLAS on one thread: the small matrix products of the agent are slowed down tenfold
    when BLAS threads compete with TensorFlow's spinning thread pool on a small machine"""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api='blas')


def _starts(env: MoleculeEnv, init_smiles: Optional[Sequence[str]]) -> List[str]:
    if init_smiles is None:
        return [EMPTY]
    if isinstance(init_smiles, str):
        init_smiles = [init_smiles]
    starts = list(dict.fromkeys(env.check_state(s) for s in init_smiles))
    if not starts:
        raise ValueError('init_smiles is empty: give at least one molecule, or None to start from nothing')
    return starts


def _check_args(episodes: int, max_steps: int, objective: Optional[str] = None):
    if episodes < 0:
        raise ValueError(f'episodes must be >= 0, got {episodes}')
    if max_steps < 1:
        raise ValueError(f'max_steps must be >= 1, got {max_steps}')
    if objective is not None and objective not in OBJECTIVES:
        raise ValueError(f'Unknown objective {objective!r}; choose from {", ".join(OBJECTIVES)}')


def generate_molecules(agent: DQNAgent, model, episodes: int, objective: str = 'atomization_energy',
                       max_steps: int = DEFAULT_MAX_STEPS, init_smiles: Optional[Sequence[str]] = None,
                       seed: Optional[int] = None, env: Optional[MoleculeEnv] = None
                       ) -> Tuple[List[str], DQNAgent]:
    """Run MolDQN episodes, learning from the model's predictions, and collect the molecules visited

    Args:
        agent: The agent (its exploration schedule continues from previous calls)
        model: Fitted scoring model (:func:`moldesign.score.train_model`); reward = -predicted objective
        episodes: Number of episodes
        objective: Objective to minimise, one of :data:`moldesign.score.OBJECTIVES`
        max_steps: Steps per episode
        init_smiles: Molecules to start episodes from (in turn, shuffled); default: the empty molecule
        seed: Random seed (exploration, replay sampling)
        env: Environment (default: ``MoleculeEnv()``, the QM9 search space)
    Returns:
        - Every distinct molecule visited (canonical SMILES), in order of first visit
        - The updated agent
    """
    _check_args(episodes, max_steps, objective)
    if model is None or not hasattr(model, 'predict'):
        raise ValueError(f'A fitted scoring model (moldesign.score.train_model) is required, got {model!r}')
    env = env if env is not None else MoleculeEnv()
    starts = _starts(env, init_smiles)
    with _single_threaded_blas():
        return _run_episodes(agent, model, episodes, objective, max_steps, starts, random.Random(seed), env)


def neighbourhood(smiles: str, depth: int, env: Optional[MoleculeEnv] = None) -> List[str]:
    """Molecules one (``depth=1``) or up to two (``depth=2``) environment actions away from a molecule

    A few thousand molecules at most for 9 heavy atoms (~0.3 s for depth 2): cheap enough to enumerate
    around the best molecules found so far and screen with the model. Random exploration rarely makes the
    two specific edits that improve a good molecule (e.g. cut an O, add a C); the thinker adds these.

    Args:
        smiles: Molecule (an invalid or empty one has no neighbourhood)
        depth: 0, 1 or 2
        env: Environment that defines the actions (default: ``MoleculeEnv()``)
    Returns:
        Distinct canonical SMILES, the molecule itself excluded
    """
    if depth not in (0, 1, 2):
        raise ValueError(f'depth must be 0, 1 or 2, got {depth}')
    env = env if env is not None else MoleculeEnv()
    start = env.check_state(smiles)
    if not start or depth == 0:
        return []
    found: Dict[str, None] = {}
    for first in env.valid_actions(start):
        found[first] = None
        if depth == 2:
            found.update(dict.fromkeys(env.valid_actions(first)))
    found.pop(start, None)
    return list(found)


def _run_episodes(agent: DQNAgent, model, episodes: int, objective: str, max_steps: int, starts: List[str],
                  rng: random.Random, env: MoleculeEnv) -> Tuple[List[str], DQNAgent]:
    """The episode loop of :func:`generate_molecules`"""
    offset, scale = agent.reward_scaling(objective)
    agent.sync_target()

    scores: Dict[str, float] = {}
    visited: Dict[str, None] = {}
    order: List[str] = []
    losses = []
    for episode in range(episodes):
        if not order:
            order = starts.copy()
            rng.shuffle(order)
        state = order.pop()
        epsilon = agent.epsilon
        actions = env.get_actions(state)
        steps = []  # (smiles, bits, steps_left, next_actions)
        for step in range(max_steps):
            steps_left = max_steps - step - 1
            choice = agent.select_action(actions, steps_left, rng, epsilon)
            state, bits = actions.smiles[choice], actions.row(choice)
            next_actions = env.get_actions(state) if steps_left > 0 else None
            steps.append((state, bits, steps_left, next_actions))
            visited[state] = None
            agent.env_steps += 1
            if agent.env_steps % agent.train_every == 0:
                loss = agent.train_step(rng)
                if loss is not None:
                    losses.append(loss)
            actions = next_actions

        # Rewards for the whole episode at once (one batched call to the model)
        missing = list(dict.fromkeys(s for s, *_ in steps if s not in scores))
        if missing:
            mean, _ = compute_score(model, missing, objective)
            scores.update(zip(missing, mean.tolist()))
        for smiles, bits, steps_left, next_actions in steps:
            reward = -(scores[smiles] - offset) / scale * agent.reward_discount ** steps_left
            agent.remember(Transition(bits, steps_left, reward, steps_left == 0, next_actions))
        agent.episodes_done += 1

    if episodes:
        logger.info(f'Ran {episodes} episodes: {len(visited)} distinct molecules, epsilon now {agent.epsilon:.3f}, '
                    f'{agent.train_steps} updates in total, '
                    f'mean loss {np.mean(losses) if losses else float("nan"):.4f}')
    return list(visited), agent


def greedy_rollouts(agent: DQNAgent, max_steps: int = DEFAULT_MAX_STEPS,
                    init_smiles: Optional[Sequence[str]] = None, env: Optional[MoleculeEnv] = None) -> List[str]:
    """Final molecules of the agent's greedy policy (no exploration, no learning)

    Args:
        agent: The agent
        max_steps: Steps per episode
        init_smiles: Starting molecules (default: the empty molecule)
        env: Environment (default: ``MoleculeEnv()``)
    Returns:
        The final molecule of one greedy episode per starting molecule
    """
    _check_args(1, max_steps)
    env = env if env is not None else MoleculeEnv()
    finals = []
    for state in _starts(env, init_smiles):
        for step in range(max_steps):
            actions = env.get_actions(state)
            state = actions.smiles[int(np.argmax(agent.q_values(actions, max_steps - step - 1)))]
        finals.append(state)
    return finals


def random_walk(episodes: int, max_steps: int = DEFAULT_MAX_STEPS, init_smiles: Optional[Sequence[str]] = None,
                seed: Optional[int] = None, env: Optional[MoleculeEnv] = None) -> Tuple[List[str], List[str]]:
    """Random walks through the environment: the baseline (and speed floor) of the agent

    Each step enumerates the valid actions and their fingerprints, as the agent does, and picks one
    at random.

    Args:
        episodes: Number of walks
        max_steps: Steps per walk
        init_smiles: Starting molecules, used in turn (default: the empty molecule)
        seed: Random seed
        env: Environment (default: ``MoleculeEnv()``)
    Returns:
        - Final molecule of each walk
        - Every distinct molecule visited, in order of first visit
    """
    _check_args(episodes, max_steps)
    env = env if env is not None else MoleculeEnv()
    starts = _starts(env, init_smiles)
    rng = random.Random(seed)
    finals, visited = [], {}
    for episode in range(episodes):
        state = starts[episode % len(starts)]
        for _ in range(max_steps):
            actions = env.get_actions(state)
            state = actions.smiles[rng.randrange(len(actions))]
            visited[state] = None
        finals.append(state)
    return finals, list(visited)
