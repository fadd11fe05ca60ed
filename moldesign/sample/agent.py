"""Deep Q-network agent of MolDQN (Zhou et al., Sci. Rep. 2019, 9, 10752).

The Q-value of an action is a function of the molecule it produces: the network reads the Morgan
fingerprint (radius 3, 2048 bits) of that molecule plus the number of steps left. Double DQN: the
online network picks the best next action, a target network (synchronised every
``target_update_period`` updates and at the start of every generator call) values it.

Pickling: the agent holds its weights as numpy arrays, its epsilon schedule and its counters; it
does not import TensorFlow and does not pickle its replay memory, target network or optimiser
state. TensorFlow/Keras is imported lazily by :meth:`DQNAgent.train_step`, which runs on the worker.
Action selection uses a numpy forward pass that exploits the sparsity of the fingerprints.
"""
from __future__ import annotations

import logging
import os
import random
from collections import deque
from typing import Deque, List, Optional, Sequence, Tuple

import numpy as np
from scipy import sparse

from moldesign.sample.environment import FINGERPRINT_LENGTH, ActionSet

logger = logging.getLogger(__name__)

STEPS_SCALE = 0.1
"""Multiplier of the steps-left input of the network"""

_KERAS_CACHE: dict = {}
"""Keras networks already built and traced in this process, by architecture: a worker reuses them
across generator calls (building and tracing costs about a second); each agent loads its own
weights and starts with a fresh optimiser state"""


def _limit_tensorflow_threads(tf) -> None:
    """Run TensorFlow's kernels on one thread, unless the worker's environment chose a number
    (``TF_NUM_INTRAOP_THREADS``, as the cluster configurations do) or TensorFlow already started

    The network is small (a 32 x 2049 batch): on a small machine, waking a pool of threads for each
    update costs more than the arithmetic, and the pool competes with RDKit's enumeration and the QC
    workers for the cores. Measured on 2 cores, TensorFlow part of an update: 2.3 ms with the default
    pools, 1.5 ms with one thread (1.0-1.4 ms with XLA as well).
    """
    if os.environ.get('TF_NUM_INTRAOP_THREADS'):
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # Already initialised in this process: keep the pools it has
        logger.debug('TensorFlow already initialised; thread pools left as they are')


class Transition:
    """One step in the replay memory

    Attributes:
        bits: Fingerprint of the molecule the action produced: (on-bits, values)
        steps_left: Steps left after the action
        reward: Reward received for reaching that molecule
        done: Whether it was the last step of the episode
        next_actions: Action set of the molecule (for the target), None if done
    """

    __slots__ = ('bits', 'steps_left', 'reward', 'done', 'next_actions')

    def __init__(self, bits: Tuple[np.ndarray, np.ndarray], steps_left: int, reward: float, done: bool,
                 next_actions: Optional[ActionSet]):
        self.bits = bits
        self.steps_left = steps_left
        self.reward = reward
        self.done = done
        self.next_actions = next_actions


def _glorot(rng: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, size=(n_in, n_out)).astype(np.float32)


class DQNAgent:
    """Double DQN agent with epsilon-greedy exploration

    Args:
        hidden_layers: Sizes of the hidden layers (ReLU)
        learning_rate: Adam learning rate
        gamma: Discount factor of the Q-learning targets
        reward_discount: Rewards of intermediate steps are multiplied by ``reward_discount ** steps_left``
            (MolDQN: the final molecule matters most)
        epsilon_start: Exploration rate at the first episode
        epsilon_end: Lowest exploration rate
        epsilon_decay: Exploration rate multiplied by this after every episode (across calls)
        batch_size: Transitions per update
        train_every: Environment steps between updates
        target_update_period: Updates between target-network synchronisations
        memory_size: Capacity of the replay memory
        min_memory: Transitions needed before training starts
        reward_offset: Objective value subtracted before scaling (None: a default per objective)
        reward_scale: Objective values are divided by this to give rewards (None: a default per objective)
        seed: Seed of the weight initialisation
    """

    DEFAULT_REWARD_SCALING = {  # (offset, scale) in kcal/mol
        'atomization_energy': (-1000.0, 1000.0),
        'atomization_energy_per_atom': (-100.0, 20.0),
    }

    def __init__(self, hidden_layers: Sequence[int] = (128, 64), learning_rate: float = 3e-4,
                 gamma: float = 0.9, reward_discount: float = 0.9, epsilon_start: float = 1.0,
                 epsilon_end: float = 0.1, epsilon_decay: float = 0.995, batch_size: int = 32,
                 train_every: int = 4, target_update_period: int = 50, memory_size: int = 4000,
                 min_memory: int = 64, reward_offset: Optional[float] = None,
                 reward_scale: Optional[float] = None, seed: Optional[int] = 0):
        if not 0 <= epsilon_end <= epsilon_start <= 1:
            raise ValueError('Need 0 <= epsilon_end <= epsilon_start <= 1')
        if not 0 < epsilon_decay <= 1:
            raise ValueError('epsilon_decay must be in (0, 1]')
        if reward_scale is not None and reward_scale <= 0:
            raise ValueError('reward_scale must be positive')
        self.hidden_layers = tuple(int(h) for h in hidden_layers)
        self.learning_rate = learning_rate
        self.gamma = gamma
        self.reward_discount = reward_discount
        self.epsilon_start = epsilon_start
        self.epsilon_end = epsilon_end
        self.epsilon_decay = epsilon_decay
        self.batch_size = batch_size
        self.train_every = train_every
        self.target_update_period = target_update_period
        self.memory_size = memory_size
        self.min_memory = min_memory
        self.reward_offset = reward_offset
        self.reward_scale = reward_scale

        # Counters (they persist across generator calls)
        self.episodes_done = 0
        self.env_steps = 0
        self.train_steps = 0

        # Weights: [W0, b0, W1, b1, ..., Wout, bout]; the first layer reads fingerprint + steps left
        rng = np.random.default_rng(seed)
        sizes = (FINGERPRINT_LENGTH + 1,) + self.hidden_layers + (1,)
        self.weights: List[np.ndarray] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            self.weights += [_glorot(rng, n_in, n_out), np.zeros(n_out, dtype=np.float32)]
        self._init_volatile()

    # ----- Pickling: weights, schedule and counters only
    def _init_volatile(self):
        self.target_weights = [w.copy() for w in self.weights]
        self.memory: Deque[Transition] = deque(maxlen=self.memory_size)
        self._keras = None  # {'model', 'optimizer', 'train_fn', 'loaded'}, built lazily on the worker

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ('target_weights', 'memory', '_keras'):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_volatile()

    # ----- Schedule
    @property
    def epsilon(self) -> float:
        """Exploration rate of the next episode"""
        return max(self.epsilon_end, self.epsilon_start * self.epsilon_decay ** self.episodes_done)

    def reward_scaling(self, objective: str) -> Tuple[float, float]:
        """Offset and scale that turn an objective value into a reward: ``-(value - offset) / scale``"""
        offset, scale = self.DEFAULT_REWARD_SCALING.get(objective, (0.0, 1.0))
        if self.reward_offset is not None:
            offset = self.reward_offset
        if self.reward_scale is not None:
            scale = self.reward_scale
        return offset, scale

    def sync_target(self):
        """Copy the online weights into the target network"""
        self.target_weights = [w.copy() for w in self.weights]

    # ----- Numpy forward pass
    @staticmethod
    def _forward(weights: List[np.ndarray], indices: np.ndarray, data: np.ndarray, indptr: np.ndarray,
                 steps_left: np.ndarray) -> np.ndarray:
        """Q-values of a batch of molecules given as sparse fingerprints (CSR layout)"""
        n = len(indptr) - 1
        x = sparse.csr_matrix((data, indices, indptr),
                              shape=(n, FINGERPRINT_LENGTH + 1))
        w0 = weights[0]
        h = np.asarray(x @ w0) + np.outer(steps_left.astype(np.float32) * STEPS_SCALE, w0[-1]) + weights[1]
        for k in range(2, len(weights), 2):
            h = np.maximum(h, 0, out=h)
            h = h @ weights[k] + weights[k + 1]
        return h[:, 0]

    def q_values(self, actions: ActionSet, steps_left: int, target: bool = False) -> np.ndarray:
        """Q-values of every action of a state

        Args:
            actions: Action set of the state
            steps_left: Steps left after taking the action
            target: Use the target network
        Returns:
            One value per action
        """
        weights = self.target_weights if target else self.weights
        return self._forward(weights, actions.indices, actions.data, actions.indptr,
                             np.full(len(actions), steps_left, dtype=np.float32))

    def select_action(self, actions: ActionSet, steps_left: int, rng: random.Random,
                      epsilon: Optional[float] = None) -> int:
        """Epsilon-greedy choice of an action

        Args:
            actions: Action set of the current state
            steps_left: Steps left after taking the action
            rng: Random number generator
            epsilon: Exploration rate (default: the schedule's)
        Returns:
            Index of the chosen action
        """
        if epsilon is None:
            epsilon = self.epsilon
        if rng.random() < epsilon:
            return rng.randrange(len(actions))
        q = self.q_values(actions, steps_left)
        return int(np.argmax(q))  # First maximum: deterministic

    # ----- Learning
    def remember(self, transition: Transition):
        """Add a transition to the replay memory"""
        self.memory.append(transition)

    def _build_keras(self):
        """Get a Keras network of this architecture (cached per process) with a fresh optimiser"""
        key = (self.hidden_layers, self.learning_rate)
        entry = _KERAS_CACHE.get(key)
        if entry is None:
            entry = _KERAS_CACHE[key] = self._new_keras()
        else:
            for variable, value in zip(entry['optimizer'].variables, entry['initial_optimizer_state']):
                variable.assign(value)  # Fresh moments and step count (the learning rate is a variable too)
        entry['loaded'] = None
        self._keras = entry

    def _new_keras(self) -> dict:
        import tensorflow as tf  # Lazy: only on the worker that trains
        import keras

        _limit_tensorflow_threads(tf)

        layers = [keras.Input(shape=(FINGERPRINT_LENGTH + 1,))]
        for size in self.hidden_layers:
            layers.append(keras.layers.Dense(size, activation='relu'))
        layers.append(keras.layers.Dense(1))
        model = keras.Sequential(layers)
        optimizer = keras.optimizers.Adam(learning_rate=self.learning_rate, clipnorm=10.0)
        loss_fn = keras.losses.Huber()

        @tf.function(reduce_retracing=True, jit_compile=True)  # XLA: one fused kernel, half the time per update
        def train_fn(x, y):
            with tf.GradientTape() as tape:
                q = model(x, training=True)[:, 0]
                loss = loss_fn(y, q)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        optimizer.build(model.trainable_variables)
        # A concrete function: calls skip the signature matching of tf.function (0.1-0.2 ms per update)
        train_fn = train_fn.get_concrete_function(tf.TensorSpec([None, FINGERPRINT_LENGTH + 1], tf.float32),
                                                  tf.TensorSpec([None], tf.float32))
        initial_state = [np.array(v.numpy()) for v in optimizer.variables]
        return {'model': model, 'optimizer': optimizer, 'train_fn': train_fn, 'loaded': None,
                'initial_optimizer_state': initial_state}

    def targets(self, batch: Sequence[Transition]) -> np.ndarray:
        """Double-DQN targets of a batch: ``r + gamma * Q_target(s', argmax_a' Q_online(s', a'))``

        The online network values every next action (one sparse product over all of them), the target
        network only the action chosen for each transition.

        Args:
            batch: Transitions
        Returns:
            One target per transition (the reward alone for the last step of an episode)
        """
        targets = np.array([t.reward for t in batch], dtype=np.float32)
        live = [k for k, t in enumerate(batch) if not t.done and len(t.next_actions) > 0]
        if live:
            sets = [batch[k].next_actions for k in live]
            sizes = np.array([len(a) for a in sets])
            nnz = np.array([len(a.indices) for a in sets])
            indices = np.concatenate([a.indices for a in sets])
            data = np.concatenate([a.data for a in sets])
            indptr = np.concatenate([[0]] + [a.indptr[1:] + o for a, o in zip(sets, np.cumsum(nnz) - nnz)])
            steps = np.repeat(np.array([batch[k].steps_left - 1 for k in live], dtype=np.float32), sizes)
            q_online = self._forward(self.weights, indices, data, indptr.astype(np.int32), steps)
            starts = np.cumsum(sizes) - sizes
            chosen = [int(np.argmax(q_online[s:s + n])) for s, n in zip(starts, sizes)]
            rows = [a.row(c) for a, c in zip(sets, chosen)]
            row_ptr = np.zeros(len(rows) + 1, dtype=np.int32)
            row_ptr[1:] = np.cumsum([len(r[0]) for r in rows])
            q_target = self._forward(self.target_weights, np.concatenate([r[0] for r in rows]),
                                     np.concatenate([r[1] for r in rows]), row_ptr, steps[starts])
            targets[live] += self.gamma * q_target
        return targets

    def train_step(self, rng: random.Random) -> Optional[float]:
        """One double-DQN update on a batch sampled from the replay memory

        Args:
            rng: Random number generator for the sampling
        Returns:
            The loss, or None if the memory holds too few transitions
        """
        if len(self.memory) < max(self.min_memory, self.batch_size):
            return None
        if self._keras is None:
            self._build_keras()
        model, train_fn = self._keras['model'], self._keras['train_fn']
        # Keras variables follow the numpy weights (replaced by unpickling, or by another agent)
        if self._keras['loaded'] is not self.weights:
            model.set_weights(self.weights)

        batch = [self.memory[i] for i in rng.sample(range(len(self.memory)), self.batch_size)]

        targets = self.targets(batch)

        x = np.zeros((len(batch), FINGERPRINT_LENGTH + 1), dtype=np.float32)
        for k, t in enumerate(batch):
            x[k, t.bits[0]] = t.bits[1]
            x[k, -1] = t.steps_left * STEPS_SCALE
        loss = float(train_fn(x, targets))

        # Copies: a numpy view of a TensorFlow buffer could change with the next update
        self.weights = [np.array(v.numpy(), dtype=np.float32) for v in model.trainable_variables]
        self._keras['loaded'] = self.weights
        self.train_steps += 1
        if self.train_steps % self.target_update_period == 0:
            self.sync_target()
        return loss
