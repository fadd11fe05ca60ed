"""Speed of MolDQN episodes with learning, against the floor of a random walk.

The floor is a random walk that only enumerates the valid actions of each state and computes
their fingerprints (what any policy must do); the learning run adds reward predictions,
Q-network forward passes and double-DQN updates. Both use a fresh environment (empty caches) and
the same episode length, in the same process. The TensorFlow import and first trace are paid in
a short warm-up call that is not timed.

Usage: python bench/rl_speed.py [--episodes 100] [--max-steps 12] [--objective atomization_energy]
The last line printed is the ratio (learning time per step / floor time per step); target <= 3.
"""
import argparse
import logging
import time

import numpy as np

from moldesign.qm9 import sample_molecules
from moldesign.sample import DQNAgent, MoleculeEnv, generate_molecules, greedy_rollouts, random_walk
from moldesign.score import compute_score, train_model

logger = logging.getLogger(__name__)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--episodes', type=int, default=100)
    parser.add_argument('--max-steps', type=int, default=12)
    parser.add_argument('--objective', default='atomization_energy')
    parser.add_argument('--train-size', type=int, default=300)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    data = sample_molecules(args.train_size, seed=args.seed)
    model = train_model(data.smiles.tolist(), data.atomization_energy.tolist())
    steps = args.episodes * args.max_steps

    # Warm-up: import TensorFlow, trace the training function (not timed)
    agent = DQNAgent(seed=args.seed, min_memory=8, batch_size=8)
    generate_molecules(agent, model, 3, args.objective, max_steps=args.max_steps, seed=args.seed)

    start = time.perf_counter()
    finals, floor_visited = random_walk(args.episodes, args.max_steps, seed=args.seed, env=MoleculeEnv())
    floor_time = time.perf_counter() - start

    agent = DQNAgent(seed=args.seed)
    start = time.perf_counter()
    visited, agent = generate_molecules(agent, model, args.episodes, args.objective, max_steps=args.max_steps,
                                        seed=args.seed, env=MoleculeEnv())
    learn_time = time.perf_counter() - start

    print(f'{args.episodes} episodes x {args.max_steps} steps, objective {args.objective}')
    print(f'floor (random walk: enumerate + fingerprints): {steps / floor_time:8.1f} steps/s '
          f'{args.episodes / floor_time:7.2f} episodes/s  ({floor_time:.2f} s, {len(floor_visited)} distinct)')
    print(f'learning (MolDQN, {agent.train_steps} updates):       {steps / learn_time:8.1f} steps/s '
          f'{args.episodes / learn_time:7.2f} episodes/s  ({learn_time:.2f} s, {len(visited)} distinct)')
    walk_scores = compute_score(model, finals, args.objective)[0]
    greedy = greedy_rollouts(agent, args.max_steps)
    print(f'predicted objective: random-walk finals mean {walk_scores.mean():.1f}, best {walk_scores.min():.1f}; '
          f'best visited by the agent {compute_score(model, visited, args.objective)[0].min():.1f}; '
          f'greedy rollout {greedy[0]} {compute_score(model, greedy, args.objective)[0][0]:.1f}')
    print(f'ratio (learning time per step / floor time per step): {learn_time / floor_time:.2f}')


if __name__ == '__main__':
    main()
