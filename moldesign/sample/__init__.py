"""Generating candidate molecules with reinforcement learning (MolDQN).

Importing this package, and creating or pickling an agent, does not import TensorFlow: the agent
builds its Keras network lazily when it first trains, on the worker.
"""
from moldesign.sample.agent import DQNAgent
from moldesign.sample.environment import EMPTY, MoleculeEnv
from moldesign.sample.generate import (DEFAULT_MAX_STEPS, generate_molecules, greedy_rollouts, neighbourhood,
                                       random_walk)

__all__ = ['DQNAgent', 'MoleculeEnv', 'EMPTY', 'DEFAULT_MAX_STEPS', 'generate_molecules', 'greedy_rollouts',
           'neighbourhood',
           'random_walk']
