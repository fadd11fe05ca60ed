"""Tests of the MolDQN environment and agent (moldesign.sample)"""
import pickle
import subprocess
import sys

import numpy as np
import pytest
from rdkit import Chem

from moldesign.chem import MAX_HEAVY_ATOMS, InvalidMoleculeError, validate_smiles
from moldesign.sample import EMPTY, DQNAgent, MoleculeEnv, generate_molecules, greedy_rollouts, random_walk
from moldesign.score import compute_score, train_model


@pytest.fixture(scope='module')
def model():
    """Fixed reward model: group contributions fit on 300 QM9 molecules"""
    from moldesign.qm9 import sample_molecules
    data = sample_molecules(300, seed=1)
    return train_model(data.smiles.tolist(), data.atomization_energy.tolist())


@pytest.fixture(scope='module')
def env():
    return MoleculeEnv()


def _check_molecules(smiles_list, max_heavy=MAX_HEAVY_ATOMS):
    assert len(smiles_list) == len(set(smiles_list)), 'duplicates'
    for smiles in smiles_list:
        assert validate_smiles(smiles, max_heavy) == smiles  # Parses, obeys the rules, canonical


def test_actions_from_empty(env):
    assert sorted(env.valid_actions(EMPTY)) == ['C', 'F', 'N', 'O']
    restricted = MoleculeEnv(atom_types=('C', 'O'))
    assert sorted(restricted.valid_actions(EMPTY)) == ['C', 'O']


def test_action_kinds(env):
    actions = env.valid_actions('CC')
    _check_molecules(actions)
    assert 'CC' in actions  # no modification
    assert {'CCC', 'CC=O', 'CC#N', 'CCF', 'C=CC'} <= set(actions)  # add an atom, bond orders 1-3
    assert {'C=C', 'C#C'} <= set(actions)  # raise a bond order
    assert 'C' in actions  # remove a bond, keep the larger piece
    assert len(actions) == len(set(actions))

    actions = set(env.valid_actions('C=CC'))
    assert {'CCC', 'C#CC', 'C1=CC1', 'C=C=C', 'C=C'} <= actions  # lower, raise, ring, removal
    # Removing a bond keeps the larger piece: CCOCC -> CCO (+ CC dropped)
    assert 'CCO' in env.valid_actions('CCOCC')
    # Hydrogens are re-derived: a pyrrole N-H may take a substituent
    assert 'Cn1cccc1' in env.valid_actions('c1cc[nH]c1')

    no_removal = MoleculeEnv(allow_removal=False, allow_no_modification=False)
    actions = no_removal.valid_actions('C=CC')
    assert 'CCC' not in actions and 'C=CC' not in actions and 'C=C=C' in actions


def test_cap_and_rings(env):
    nonane = 'CCCCCCCCC'
    actions = env.valid_actions(nonane)
    _check_molecules(actions)
    assert all(Chem.MolFromSmiles(s).GetNumHeavyAtoms() <= MAX_HEAVY_ATOMS for s in actions)
    assert 'C1CCCCCCCC1' not in actions and 'C1CCCCCCC1C' not in actions  # Rings > 7 avoided
    assert 'CC1CCCCCC1C' in actions  # 7-membered ring allowed
    big = MoleculeEnv(allowed_ring_sizes=range(3, 10))
    assert 'C1CCCCCCCC1' in big.valid_actions(nonane)
    small = MoleculeEnv(max_heavy_atoms=3)
    assert all(Chem.MolFromSmiles(s).GetNumHeavyAtoms() <= 3 for s in small.valid_actions('CCC'))
    assert 'CCCC' not in small.valid_actions('CCC')


def test_many_states_are_valid(env):
    from moldesign.qm9 import sample_molecules
    for smiles in sample_molecules(30, seed=5).smiles:
        actions = env.get_actions(smiles)
        _check_molecules(list(actions.smiles))
        assert len(actions.indptr) == len(actions) + 1 and len(actions.indices) == actions.indptr[-1]
        assert smiles in actions.smiles


def test_strained_rings_rejected(env):
    benzene = env.valid_actions('c1ccccc1')
    assert 'C1=C=CC=CC=1' not in benzene and 'C1#CC=CC=C1' not in benzene
    assert 'C1=CC=1' not in env.valid_actions('C=CC')
    strained = MoleculeEnv(allow_strained=True)
    assert 'C1=CC=1' in strained.valid_actions('C=CC')
    assert 'C1=C=CC=CC=1' in strained.valid_actions('c1ccccc1')


@pytest.mark.parametrize('smiles', [
    'O=c1oc2c3[nH]c1c32',  # Aromatic atoms in a 3-membered ring: bonds broke in the xtb relaxation
    'O=c1c2cc3n(c2)n13',  # Aromatic atoms in a 4-membered ring: RDKit could not embed it
    'O1C2=C3C4=C5C1C34C25',  # Double bonds at bridgeheads of small rings: RDKit could not embed it
    'OC12C3=C4C3=C1C1C4=C12',
])
def test_cages_that_fail_qc_are_strained(smiles):
    """Molecules MolDQN proposed in per-atom searches, each a QC failure"""
    from rdkit import Chem
    from moldesign.sample.environment import _is_strained
    assert _is_strained(Chem.MolFromSmiles(smiles))


@pytest.mark.parametrize('smiles', ['c1ccoc1', 'C1=CCC1', 'C1CC2CC12', 'O=C1CC1', 'C1=CC2CC2C1', 'N#CC1(C#N)CO1'])
def test_ordinary_rings_are_not_strained(smiles):
    from rdkit import Chem
    from moldesign.sample.environment import _is_strained
    assert not _is_strained(Chem.MolFromSmiles(smiles))


def test_env_errors():
    with pytest.raises(ValueError, match='not heavy elements'):
        MoleculeEnv(atom_types=('C', 'S'))
    with pytest.raises(ValueError, match='max_heavy_atoms'):
        MoleculeEnv(max_heavy_atoms=12)
    with pytest.raises(InvalidMoleculeError, match='cap'):
        MoleculeEnv(max_heavy_atoms=3).check_state('CCCC')


def test_agent_does_not_import_tensorflow():
    code = ('import pickle, sys; from moldesign.sample import DQNAgent, MoleculeEnv, generate_molecules; '
            'a = pickle.loads(pickle.dumps(DQNAgent())); '
            'a.select_action(MoleculeEnv().get_actions("CCO"), 3, __import__("random").Random(0)); '
            'assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TF imported"')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_double_dqn_targets(env):
    """Batched targets equal the definition evaluated one transition at a time"""
    from moldesign.sample.agent import Transition
    agent = DQNAgent(seed=3)
    rng = np.random.default_rng(0)
    agent.weights = [w + rng.normal(0, 0.05, w.shape).astype(np.float32) for w in agent.weights]  # online != target
    batch = []
    for k, state in enumerate(['C', 'CCO', 'c1ccccc1', 'CC(=O)N', 'CCCCCCCCC', 'OC1CC1', 'C#N']):
        steps_left = k % 4
        actions = env.get_actions(state)
        bits = env.fingerprint(state)
        batch.append(Transition(bits, steps_left, reward=-0.1 * k, done=steps_left == 0,
                                next_actions=None if steps_left == 0 else actions))
    expected = []
    for t in batch:
        if t.done:
            expected.append(t.reward)
            continue
        best = int(np.argmax(agent.q_values(t.next_actions, t.steps_left - 1)))
        q_target = agent.q_values(t.next_actions, t.steps_left - 1, target=True)[best]
        expected.append(t.reward + agent.gamma * q_target)
    targets = agent.targets(batch)
    assert any(t.done for t in batch) and not all(t.done for t in batch)
    assert not np.allclose(targets, [t.reward for t in batch])  # the bootstrap term matters
    np.testing.assert_allclose(targets, expected, rtol=1e-5, atol=1e-6)


def test_generate_and_learn(model, env):
    """The agent learns: greedy rollouts beat random walks of the same length on the predicted objective"""
    max_steps = 12
    agent = DQNAgent(epsilon_decay=0.985, seed=0)
    assert agent.epsilon == 1.0
    candidates = []
    for call in range(2):
        new, agent = generate_molecules(agent, model, 100, max_steps=max_steps, seed=call)
        candidates.extend(new)
        # The agent travels between the thinker and the worker: small, and keeps its schedule
        blob = pickle.dumps(agent)
        assert len(blob) < 5e6
        copy = pickle.loads(blob)
        assert copy.episodes_done == agent.episodes_done == 100 * (call + 1)
        assert copy.epsilon == agent.epsilon < 1.0
        assert all(np.array_equal(a, b) for a, b in zip(copy.weights, agent.weights))
        assert len(copy.memory) == 0 and len(agent.memory) > 0
        agent = copy
    assert agent.train_steps > 100

    # Candidates: valid, in the space, distinct within a call, and some reach the 9-atom cap
    _check_molecules(new)
    _check_molecules(sorted(set(candidates)))
    assert max(Chem.MolFromSmiles(s).GetNumHeavyAtoms() for s in candidates) == MAX_HEAVY_ATOMS

    greedy = greedy_rollouts(agent, max_steps=max_steps, env=env)
    walks, _ = random_walk(100, max_steps=max_steps, seed=0, env=env)
    greedy_score = compute_score(model, greedy)[0][0]
    walk_scores = compute_score(model, walks)[0]
    print(f'greedy {greedy[0]} {greedy_score:.0f} kcal/mol; random walks: mean {walk_scores.mean():.0f}, '
          f'best {walk_scores.min():.0f}')
    assert greedy_score < walk_scores.mean() - 500
    assert greedy_score < np.percentile(walk_scores, 5)

    # The best candidates of the calls are far better than random walks too
    cand_scores = compute_score(model, candidates)[0]
    assert cand_scores.min() < walk_scores.min()


def test_reproducible_and_init_smiles(model):
    runs = []
    for _ in range(2):  # The second agent reuses the Keras network built for the first one
        agent = DQNAgent(seed=3, min_memory=16, batch_size=16, train_every=2)
        initial = [w.copy() for w in agent.weights]
        runs.append(generate_molecules(agent, model, 12, max_steps=6, seed=7)[0])
        assert agent.train_steps > 0
        assert not any(np.array_equal(a, b) for a, b in zip(initial, agent.weights))  # It did learn
    assert runs[0] == runs[1]
    assert generate_molecules(DQNAgent(seed=3), model, 12, max_steps=6, seed=8)[0] != runs[0]

    # Episodes start from the given molecules: one step leads to their neighbours
    env = MoleculeEnv()
    starts = ['CCO', 'c1ccccc1']
    found, agent = generate_molecules(DQNAgent(), model, 10, objective='atomization_energy_per_atom',
                                      max_steps=1, init_smiles=starts, seed=0, env=env)
    neighbours = set(env.valid_actions('CCO')) | set(env.valid_actions('c1ccccc1'))
    assert set(found) <= neighbours
    assert set(found) & set(env.valid_actions('CCO')) and set(found) & set(env.valid_actions('c1ccccc1'))
    assert agent.episodes_done == 10


def test_generate_errors(model):
    agent = DQNAgent()
    with pytest.raises(ValueError, match='Unknown objective'):
        generate_molecules(agent, model, 1, objective='gap')
    with pytest.raises(InvalidMoleculeError):
        generate_molecules(agent, model, 1, init_smiles=['C1CC'])
    with pytest.raises(ValueError, match='episodes'):
        generate_molecules(agent, model, -1)
    with pytest.raises(ValueError, match='max_steps'):
        generate_molecules(agent, model, 1, max_steps=0)
    with pytest.raises(ValueError, match='scoring model'):
        generate_molecules(agent, None, 1)
    with pytest.raises(ValueError, match='epsilon'):
        DQNAgent(epsilon_start=0.1, epsilon_end=0.5)


def test_neighbourhood_depths():
    from moldesign.chem import is_valid
    from moldesign.sample import neighbourhood
    one, two = set(neighbourhood('CCO', 1)), set(neighbourhood('CCO', 2))
    assert {'CCCO', 'CC=O', 'CO'} <= one < two and 'CCO' not in two
    assert 'CC(C)CO' in two - one  # Two atoms added
    octanol = neighbourhood('CCCCCCCCO', 2)
    assert 'CCCCCCCCC' in octanol and len(octanol) == len(set(octanol))  # Two edits: drop O, add C
    assert all(is_valid(s) for s in two)
    assert neighbourhood('CCO', 0) == [] and neighbourhood('', 2) == []
    with pytest.raises(ValueError, match='depth'):
        neighbourhood('CCO', 3)
