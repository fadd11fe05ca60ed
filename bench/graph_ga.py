"""Graph GA (PyPI ``mol-ga``) as a peer of the steered search: same QC, same start, same budget.

The GA is mol-ga's own :func:`mol_ga.default_ga` (Jensen's Graph GA mutation and crossover operators,
parents drawn uniformly from log-spaced top quantiles, the best ``population_size`` molecules kept);
nothing of it is re-implemented here. This module only supplies its scoring function,
:class:`BudgetedScorer`, which puts the GA under the steered search's conditions:

- **QC**: the application's own task, ``moldesign.simulate.compute_atomization_energy(smiles,
  get_spec('xtb'), refs)`` (GFN2-xTB, relaxed), with the reference atom energies of
  ``compute_reference_energy``; the GA maximises the negated objective.
- **start**: the steered run's initial population (``run.py`` draws
  ``dict.fromkeys(moldesign.qm9.sample_molecules(initial_count, seed=S).smiles)``, see
  :func:`initial_population`), computed first, in that order.
- **budget**: QC evaluations, initial molecules included; a failed QC task counts. A molecule outside
  the search space (``moldesign.chem.validate_smiles`` raises) scores :data:`FAILED_SCORE` without
  QC and does not count; a molecule already computed (same canonical SMILES) is not recomputed.
  Once the budget is spent the scorer raises :class:`BudgetSpent` instead of calling QC, which ends
  the GA: the record holds exactly ``budget`` evaluations, in order.

Run alone (one GA campaign, JSON out)::

    python bench/graph_ga.py --objective atomization_energy --seed 1 --initial-count 8 --budget 48 --out ga.json

``search_efficiency.py`` runs it this way as a subprocess with a fixed ``PYTHONHASHSEED``: mol-ga
keeps its population in Python sets, whose order (hence the order of evaluation and the draws of
parents among equal scores) depends on string hashing.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets OMP_NUM_THREADS before tblite loads)

logger = logging.getLogger(__name__)

FAILED_SCORE = -1e6
"""Score of a failed QC evaluation or a molecule outside the search space (the GA maximises; every
molecule's negated atomization energy is positive, so any value below 0 ranks it last: only ranks
matter to mol-ga's quantile sampling and top-N selection)"""


@dataclass
class GAConfig:
    """Settings of mol-ga's ``default_ga`` (all other settings are mol-ga's defaults)

    Attributes:
        offspring_size: Children proposed per generation (mol-ga draws twice as many parents)
        population_size: Molecules kept between generations (the best ones)
        frac_mutate: Fraction of children made by mutation alone (the rest by crossover, which then
            mutates with mol-ga's fixed probability 0.01); mol-ga's default is 0.1
        max_generations: Safety cap; the budget normally ends the GA long before
    """
    offspring_size: int = 8
    population_size: int = 10_000
    frac_mutate: float = 0.1
    max_generations: int = 2000


@dataclass
class Evaluation:
    """One QC evaluation made for the GA

    Attributes:
        smiles: Canonical SMILES (the application's key)
        proposed: SMILES as mol-ga wrote it
        objective: Objective value (kcal/mol or kcal/mol per atom), None if the QC failed
        error: Failure message, None on success
        walltime: Seconds spent in the QC task
    """
    smiles: str
    proposed: str
    objective: Optional[float]
    error: Optional[str] = None
    walltime: float = 0.


class BudgetSpent(Exception):
    """Raised by :class:`BudgetedScorer` instead of starting a QC evaluation beyond the budget"""


@dataclass
class BudgetedScorer:
    """mol-ga scoring function (a list of SMILES in, scores out) with a QC budget

    Args:
        evaluate: Objective of a canonical SMILES (may raise: a failed evaluation)
        budget: Number of QC evaluations allowed
    """
    evaluate: Callable[[str], float]
    budget: int
    evaluations: List[Evaluation] = field(default_factory=list)
    invalid: Dict[str, str] = field(default_factory=dict)
    """Proposals outside the search space: SMILES -> reason (no QC, not counted)"""
    n_invalid_proposals: int = 0
    """Times such a proposal was scored (mol-ga caches its own strings, so mostly distinct ones)"""
    n_calls: int = 0
    """Batches scored (the initial population twice, then one per generation)"""
    _scores: Dict[str, float] = field(default_factory=dict)

    def __call__(self, smiles_list: Sequence[str]) -> List[float]:
        """Scores (negated objective; :data:`FAILED_SCORE` for failures) of a batch, in order

        Raises:
            BudgetSpent: when a molecule would need QC after the budget is spent
        """
        from moldesign.chem import InvalidMoleculeError, validate_smiles
        self.n_calls += 1
        scores = []
        for proposed in smiles_list:
            try:
                key = validate_smiles(proposed)
            except InvalidMoleculeError as exc:
                self.invalid[proposed] = str(exc)
                self.n_invalid_proposals += 1
                scores.append(FAILED_SCORE)
                continue
            if key not in self._scores:
                self._scores[key] = self._compute(key, proposed)
            scores.append(self._scores[key])
        return scores

    def _compute(self, key: str, proposed: str) -> float:
        if len(self.evaluations) >= self.budget:
            raise BudgetSpent(f'{self.budget} QC evaluations done')
        start = time.perf_counter()
        try:
            value = float(self.evaluate(key))
            if not math.isfinite(value):
                raise ValueError(f'objective is {value}')
        except Exception as exc:  # Any failure of the QC task is a failed evaluation, as in the app
            logger.info(f'{key}: QC failed: {exc}')
            self.evaluations.append(Evaluation(key, proposed, None, f'{type(exc).__name__}: {exc}'[:300],
                                               time.perf_counter() - start))
            return FAILED_SCORE
        self.evaluations.append(Evaluation(key, proposed, value, None, time.perf_counter() - start))
        return -value


def initial_population(initial_count: int, seed: int) -> List[str]:
    """The initial molecules of ``run.py --initial-count N --seed S`` (same draw, same order)"""
    from moldesign.qm9 import sample_molecules
    return list(dict.fromkeys(sample_molecules(initial_count, seed=seed)['smiles']))


def qc_objective(objective: str, refs: Dict[str, float]) -> Callable[[str], float]:
    """The application's QC task (GFN2-xTB, relaxed) returning one objective"""
    from moldesign.simulate import compute_atomization_energy, get_spec
    spec = get_spec('xtb')

    def evaluate(smiles: str) -> float:
        return getattr(compute_atomization_energy(smiles, spec, refs), objective)
    return evaluate


def run_graph_ga(initial: Sequence[str], evaluate: Callable[[str], float], budget: int, seed: int,
                 config: Optional[GAConfig] = None) -> dict:
    """Run mol-ga's Graph GA until the QC budget is spent

    Args:
        initial: Starting population, computed first in this order (they count in the budget)
        evaluate: Objective of a canonical SMILES (lower is better; may raise)
        budget: QC evaluations allowed, initial molecules included
        seed: Seed of the GA's random number generator
        config: GA settings (default: :class:`GAConfig`)
    Returns:
        ``evaluations`` (list of :class:`Evaluation` as dicts, in order), ``n_failed``, ``invalid``
        (distinct proposals outside the search space), ``n_invalid_proposals``, ``generations``
        (started), ``stopped`` (``budget`` or ``max_generations``), ``config``, ``walltime``
    """
    from mol_ga import default_ga
    from mol_ga.graph_ga.gen_candidates import graph_ga_blended_generation

    config = config or GAConfig()
    scorer = BudgetedScorer(evaluate, budget)
    start = time.perf_counter()
    stopped = 'max_generations'
    try:
        scorer(list(initial))  # The initial population first, in the steered run's order
        results = default_ga(
            starting_population_smiles=list(initial), scoring_function=scorer,
            max_generations=config.max_generations, offspring_size=config.offspring_size,
            population_size=config.population_size, rng=random.Random(seed), logger=logger,
            offspring_gen_func=functools.partial(graph_ga_blended_generation, frac_graph_ga_mutate=config.frac_mutate))
        logger.debug(f'GA ended with a population of {len(results.population)}')
    except BudgetSpent:
        stopped = 'budget'
    if stopped != 'budget':
        logger.warning(f'The GA stopped after {config.max_generations} generations with '
                       f'{len(scorer.evaluations)} of {budget} evaluations')
    return {'evaluations': [asdict(e) for e in scorer.evaluations],
            'n_failed': sum(e.error is not None for e in scorer.evaluations),
            'invalid': scorer.invalid, 'n_invalid_proposals': scorer.n_invalid_proposals,
            'generations': max(scorer.n_calls - 2, 0), 'stopped': stopped, 'config': asdict(config), 'seed': seed,
            'initial': list(initial), 'walltime': time.perf_counter() - start}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--objective', choices=common.OBJECTIVES, required=True)
    parser.add_argument('--seed', type=int, required=True,
                        help='Seed of the initial draw (as run.py --seed) and of the GA')
    parser.add_argument('--budget', type=int, required=True, help='QC evaluations, initial molecules included')
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument('--initial-count', type=int, help='Initial molecules drawn as run.py does')
    start.add_argument('--initial-json', type=Path, help="A run's initial_molecules.json (list of SMILES)")
    parser.add_argument('--offspring', type=int, default=GAConfig.offspring_size, help='Children per generation')
    parser.add_argument('--population', type=int, default=GAConfig.population_size, help='Molecules kept')
    parser.add_argument('--frac-mutate', type=float, default=GAConfig.frac_mutate,
                        help="Fraction of children made by mutation alone (mol-ga's default 0.1)")
    parser.add_argument('--out', type=Path, required=True, help='JSON output')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(name)s %(levelname)s %(message)s')

    initial = (json.loads(args.initial_json.read_text()) if args.initial_json is not None
               else initial_population(args.initial_count, args.seed))
    config = GAConfig(offspring_size=args.offspring, population_size=args.population, frac_mutate=args.frac_mutate)
    result = run_graph_ga(initial, qc_objective(args.objective, common.reference_energies()), args.budget,
                          args.seed, config)
    result['objective'] = args.objective
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    values = [e['objective'] for e in result['evaluations'] if e['objective'] is not None]
    print(f'{len(result["evaluations"])} evaluations ({result["n_failed"]} failed), '
          f'{len(result["invalid"])} proposals outside the search space, {result["generations"]} '
          f'generations, stopped by {result["stopped"]}; best {min(values) if values else float("nan"):.2f}; '
          f'{result["walltime"]:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
