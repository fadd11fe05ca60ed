"""What tells the QC failures of a search from its successes: cheap signals judged in the run's own order.

Reads the run directories kept by ``python bench/search_efficiency.py --keep-runs DIR`` and, for every steered
molecule of every run, fits each signal's classifier on the records computed before it in that run (as the
screening would have, without the latency of a real run) and asks whether it would have flagged the molecule:

- ``groups``: :class:`moldesign.score.feasibility.FeasibilityModel` on the atom-centred groups only
  (``topology=False``, as runs before 2026-12-02's fourth session used it);
- ``groups+topology``: the same with the ring-topology counts (:func:`~moldesign.score.feasibility.ring_topology`),
  as the run uses it now; ``p<0.6``: flagged below a success probability of 0.6 instead of 0.5;
- ``strain``: :class:`moldesign.score.feasibility.StrainModel`'s limit (bonded MMFF94 energy per heavy atom), as the
  screening applies it;
- ``total MMFF``: the same limit on the whole MMFF94 energy per heavy atom (the measure before 2026-12-02);
- ``nearest>=0.3``: the most similar earlier molecule (Tanimoto on Morgan fingerprints, radius 2) failed and is at
  least 0.3 similar.

Also prints each measure's ROC AUC over all molecules. The LAST line gives, per signal, the failures and
successes flagged.

    python bench/search_efficiency.py --objectives atomization_energy_per_atom --methods steered --keep-runs /tmp/pa
    python bench/failure_signals.py /tmp/pa
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
common.use_this_checkout()

from rdkit import Chem, DataStructs  # noqa: E402
from rdkit.Chem import rdFingerprintGenerator  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from moldesign.score.feasibility import FeasibilityModel, StrainModel  # noqa: E402
from moldesign.simulate.embed import mmff_relaxed, strain_energy  # noqa: E402


@functools.lru_cache(maxsize=None)
def total_mmff_energy(smiles: str) -> Optional[float]:
    """The whole MMFF94 energy per heavy atom (all terms) of the relaxed conformer of
    :func:`~moldesign.simulate.embed.strain_energy` (the screening's strain measure before 2026-12-02: bonded terms
    only since)"""
    relaxed = mmff_relaxed(smiles)
    return None if relaxed is None else relaxed[2] / relaxed[0].GetNumHeavyAtoms()


_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


@functools.lru_cache(maxsize=None)
def fingerprint(smiles: str):
    return _MORGAN.GetFingerprint(Chem.MolFromSmiles(smiles))


def nearest_is_failure(smiles: str, before: Sequence[str], labels: Sequence[bool], min_similarity: float) -> bool:
    """Whether the most similar earlier molecule (Tanimoto, Morgan radius 2) failed and is at least that similar"""
    if not before or all(labels):
        return False
    similarity = np.array(DataStructs.BulkTanimotoSimilarity(fingerprint(smiles), [fingerprint(s) for s in before]))
    best = int(np.argmax(similarity))
    return not labels[best] and similarity[best] >= min_similarity


def run_records(root: Path) -> List[List[dict]]:
    """The initial and steered records of each kept run under ``root``, in the order they were computed"""
    runs = []
    for path in sorted(root.rglob('simulation_records.jsonld')):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        records = [r for r in records if r.get('phase') in ('initial', 'steered') and r.get('smiles')]
        runs.append(sorted(records, key=lambda r: r.get('evaluation') or 0))
    return runs


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('runs', type=Path, help='Directory of run directories (search_efficiency.py --keep-runs)')
    args = parser.parse_args(argv)
    runs = run_records(args.runs)
    if not runs:
        print(f'failure_signals.py: error: no simulation_records.jsonld under {args.runs}', file=sys.stderr)
        return 2
    signals = ('groups', 'groups+topology', 'groups+topology p<0.6', 'strain', 'total MMFF', 'nearest>=0.3')
    counts = {s: [0, 0, 0, 0] for s in signals}  # Failures flagged, failures, successes flagged, successes
    for records in runs:
        for i, record in enumerate(records):
            if record['phase'] != 'steered':
                continue
            before = [r['smiles'] for r in records[:i]]
            labels = [bool(r['success']) for r in records[:i]]
            smiles = record['smiles']
            with_topology = FeasibilityModel().fit(before, labels).predict_proba([smiles])[0, 1]
            flagged = {
                'groups': FeasibilityModel(topology=False).fit(before, labels).predict_proba([smiles])[0, 1] < 0.5,
                'groups+topology': with_topology < 0.5,
                'groups+topology p<0.6': with_topology < 0.6,
                'strain': not StrainModel().fit(before, labels).predict([smiles])[0],
                'total MMFF': not StrainModel(prior_limit=12.0, measure=total_mmff_energy).fit(
                    before, labels).predict([smiles])[0],
                'nearest>=0.3': nearest_is_failure(smiles, before, labels, 0.3),
            }
            for signal, flag in flagged.items():
                c = counts[signal]
                if record['success']:
                    c[2], c[3] = c[2] + flag, c[3] + 1
                else:
                    c[0], c[1] = c[0] + flag, c[1] + 1
    every = [r for records in runs for r in records]
    failed = np.array([not r['success'] for r in every])
    for name, measure in (('strain', strain_energy), ('total MMFF', total_mmff_energy)):
        values = np.array([measure(r['smiles']) for r in every], dtype=float)
        known = np.isfinite(values)
        if failed[known].any() and (~failed[known]).any():
            print(f'{name}: ROC AUC {roc_auc_score(failed[known], values[known]):.3f} over {known.sum()} molecules '
                  f'(median failed {np.median(values[known & failed]):.1f}, succeeded '
                  f'{np.median(values[known & ~failed]):.1f})')
    print(f'{len(runs)} runs, {int(failed.sum())} failures among {len(every)} molecules (initial ones included)')
    print('flagged (failures; successes): ' + '; '.join(
        f'{s} {c[0]}/{c[1]}; {c[2]}/{c[3]}' for s, c in counts.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
