"""Simulated QC for the scale benchmark: the application's QC task names, a sleep instead of the computation.

:class:`SimulatedQC` stands in for :func:`moldesign.simulate.compute_atomization_energy`,
:func:`~moldesign.simulate.compute_reference_energy` and
:func:`~moldesign.simulate.bundle.compute_atomization_energies` (same names, arguments and return types): each task
sleeps for a duration drawn from a log-normal distribution of mean ``mean_time`` and returns a real
:class:`~moldesign.simulate.AtomizationRecord` whose energy comes from a fixed, cheap oracle: the application's
group-contribution model fitted on GFN2-xTB atomization energies of a QM9 sample (``bench/common.py``'s
:func:`~common.qm9_gfn2_sample`), plus a fixed noise per molecule. The oracle costs ~0.1-0.3 ms per molecule, so
thousands of such tasks run as threads of one process (a Parsl ``ThreadPoolExecutor``).
"""
from __future__ import annotations

import hashlib
import logging
import math
import pickle
import random
import threading
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

logger = logging.getLogger(__name__)

NOISE = 2.0
"""Standard deviation (kcal/mol) of the oracle's fixed per-molecule noise"""
SIGMA = 0.5
"""Log-normal shape of the task durations (standard deviation of the log)"""


class Oracle:
    """Atomization energy of any molecule of the search space from a fitted group-contribution model

    Args:
        smiles: Training molecules
        values: Their total atomization energies (kcal/mol)
        noise: Standard deviation of a fixed pseudo-random offset per molecule (kcal/mol)
    """

    def __init__(self, smiles: Sequence[str], values: Sequence[float], noise: float = NOISE):
        from moldesign.score import train_model
        model = train_model(smiles, values)
        featurizer, regressor = model['featurizer'], model['regressor']
        self._featurizer = featurizer
        self._vocab = featurizer.vocabulary_
        self._other = self._vocab['other'] if 'other' in self._vocab else len(self._vocab) - 1
        self._coef = np.asarray(regressor.coef_, dtype=float)
        self.noise = noise
        self._known: Dict[str, Tuple[float, str, Dict[str, int]]] = {}

    def key(self) -> str:
        """Hash of the oracle's coefficients and noise (names its cache file)"""
        text = repr((sorted(self._vocab.items()), self._coef.round(8).tolist(), self.noise))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self, smiles: str) -> Tuple[float, str, Dict[str, int]]:
        """Atomization energy (kcal/mol), formula and element counts of a molecule (precomputed ones from memory)"""
        known = self._known.get(smiles)
        if known is not None:
            return known
        from rdkit.Chem.rdMolDescriptors import CalcMolFormula
        from moldesign.chem import parse_smiles
        mol = parse_smiles(smiles)
        counts: Dict[str, int] = {}
        for atom in mol.GetAtoms():
            counts[atom.GetSymbol()] = counts.get(atom.GetSymbol(), 0) + 1
            if atom.GetTotalNumHs():
                counts['H'] = counts.get('H', 0) + atom.GetTotalNumHs()
        return self(smiles, mol), CalcMolFormula(mol), counts

    def precompute(self, smiles: Sequence[str], cache: Optional[Path] = None) -> None:
        """Describe molecules ahead of the run (e.g. the QM9 library), so the simulated tasks only look them up

        Args:
            smiles: Molecules
            cache: Pickle file keeping the descriptions between runs (read if present, rewritten if extended)
        """
        if cache is not None and cache.is_file() and not self._known:
            with cache.open('rb') as fp:
                self._known.update(pickle.load(fp))
        missing = [s for s in dict.fromkeys(smiles) if s not in self._known]
        for s in missing:
            self._known[s] = self.describe(s)
        if cache is not None and missing:
            tmp = cache.with_suffix('.tmp')
            with tmp.open('wb') as fp:
                pickle.dump(self._known, fp)
            tmp.replace(cache)

    def __call__(self, smiles: str, mol=None) -> float:
        """Total atomization energy (kcal/mol)

        Args:
            smiles: The molecule
            mol: Its RDKit molecule, if parsed already (saves the parse)
        """
        from moldesign.chem import parse_smiles
        from moldesign.score.featurize import RING_LABELS, atom_type, count_groups
        mol = parse_smiles(smiles) if mol is None else mol
        counts = count_groups(mol)  # The features of GroupCountFeaturizer, from one parse
        counts.update('atom:' + atom_type(a) for a in mol.GetAtoms())
        counts.update(RING_LABELS[min(len(ring), 8) - 3] for ring in mol.GetRingInfo().AtomRings())
        total = 0.
        for group, count in counts.items():
            total += count * self._coef[self._vocab.get(group, self._other)]
        digest = hashlib.blake2b(smiles.encode(), digest_size=8).digest()
        offset = random.Random(digest).gauss(0., self.noise)
        return float(total + offset)


def load_oracle(n: int = 2000, seed: int = 0) -> Oracle:
    """The oracle fitted on ``n`` QM9 molecules' GFN2-xTB single points (cached by ``bench/common.py``)"""
    import common
    table = common.qm9_gfn2_sample(n, seed=seed, refs=reference_energies())
    return Oracle(table['smiles'].tolist(), table['atomization_energy'].tolist())


_REFERENCES: Dict[str, float] = {}


def reference_energies() -> Dict[str, float]:
    """GFN2-xTB isolated-atom energies (Hartree), computed once per process"""
    if not _REFERENCES:
        import common
        _REFERENCES.update(common.reference_energies())
    return dict(_REFERENCES)


def _fake_xyz(smiles: str, counts: Mapping[str, int]) -> str:
    """XYZ text of the right atoms and size (coordinates are placeholders: the benchmark never reads them)"""
    lines = [str(sum(counts.values())), smiles]
    i = 0
    for element, n in counts.items():
        for _ in range(n):
            lines.append(f'{element:<2s} {1.1 * i:14.8f} {0.37 * (i % 3):14.8f} {-0.21 * (i % 5):14.8f}')
            i += 1
    return '\n'.join(lines) + '\n'


class SimulatedQC:
    """Simulated QC tasks with the application's names (see the module docstring)

    Args:
        oracle: Atomization energies of molecules (kcal/mol)
        mean_time: Mean duration of a molecule's task (s)
        sigma: Log-normal shape of the durations
        failure_rate: Probability that a molecule fails (``QCFailure``), as real QC sometimes does
        reference_time: Duration of an isolated atom's task (s)
        seed: Seed of the durations and failures
    """

    def __init__(self, oracle: Oracle, mean_time: float, sigma: float = SIGMA, failure_rate: float = 0.05,
                 reference_time: float = 0.5, seed: int = 0):
        self.oracle = oracle
        self.mean_time, self.sigma = mean_time, sigma
        self.failure_rate = failure_rate
        self.reference_time = reference_time
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._mu = math.log(mean_time) - sigma ** 2 / 2  # Mean of the log-normal = mean_time

    def _draw(self) -> tuple:
        with self._lock:
            return self._rng.lognormvariate(self._mu, self.sigma), self._rng.random() < self.failure_rate

    def methods(self) -> List:
        """The three task functions, named as the application's"""
        return [_named(self.reference_energy, 'compute_reference_energy'),
                _named(self.atomization_energy, 'compute_atomization_energy'),
                _named(self.atomization_energies, 'compute_atomization_energies')]

    def reference_energy(self, element: str, spec) -> float:
        """Isolated-atom energy (Hartree) after ``reference_time`` seconds"""
        time.sleep(self.reference_time)
        return reference_energies()[element]

    def atomization_energy(self, smiles: str, spec, reference_energies: Mapping[str, float], **kwargs):
        """One molecule: sleep a drawn duration, then its record from the oracle"""
        duration, fail = self._draw()
        time.sleep(duration)
        return self._record(smiles, spec, reference_energies, duration, fail)

    def atomization_energies(self, smiles: Sequence[str], spec, reference_energies: Mapping[str, float]
                             ) -> List[Union[object, str]]:
        """Several molecules one after the other (a bundle): records, or why a molecule failed"""
        out = []
        for molecule in smiles:
            duration, fail = self._draw()
            time.sleep(duration)
            try:
                out.append(self._record(molecule, spec, reference_energies, duration, fail))
            except Exception as exc:
                out.append(f'{type(exc).__name__}: {exc}')
        return out

    def _record(self, smiles: str, spec, refs: Mapping[str, float], duration: float, fail: bool):
        from moldesign.simulate import HARTREE_TO_KCAL_MOL, AtomizationRecord, QCFailure
        if fail:
            raise QCFailure(f'{smiles}: simulated QC failure (SCF not converged)')
        atomization, formula, counts = self.oracle.describe(smiles)
        n_atoms = sum(counts.values())
        hartree = atomization / HARTREE_TO_KCAL_MOL
        return AtomizationRecord(
            smiles=smiles, formula=formula, n_atoms=n_atoms,
            n_heavy_atoms=n_atoms - counts.get('H', 0),
            total_energy=hartree + sum(n * float(refs[e]) for e, n in counts.items()),
            atomization_energy=atomization, atomization_energy_hartree=hartree,
            atomization_energy_per_atom=atomization / n_atoms, xyz=_fake_xyz(smiles, counts), n_steps=12,
            qc_spec=spec.name, program='simulated', method=spec.method, basis=spec.basis, program_version='0',
            walltime=duration)


def _named(method, name: str):
    """A plain function named ``name`` calling ``method`` (Colmena names task methods after ``__name__``)"""
    def task(*args, **kwargs):
        return method(*args, **kwargs)
    task.__name__ = task.__qualname__ = name
    task.__doc__ = method.__doc__
    return task
