"""QM9 reference data from the ``qm9pack`` package (no download).

``qm9pack`` ships QM9 as three CSV files (~230 MB). The first call of :func:`load_qm9` reads them
once (about a minute: every SMILES is canonicalised with :func:`moldesign.chem.canonicalize`)
and writes a compact pickle of the columns needed here into the cache directory
(``platformdirs.user_cache_dir('moldesign')``, or ``$MOLDESIGN_CACHE_DIR``). The cache is
written atomically and is rebuilt when the CSV files change (size or modification time) or the
cache format changes. Later loads take well under a second.

Columns of the table:

- ``smiles``: canonical SMILES (our molecule key); ``qm9_smiles``: QM9's own SMILES
- ``qm9_index`` (int), ``n_heavy_atoms``, ``n_atoms`` (H included), ``formula`` (Hill)
- ``in_search_space``: whether the molecule obeys our rules (QM9 holds a few zwitterions)
- ``u0`` (Hartree): QM9's B3LYP/6-31G(2df,p) internal energy at 0 K
- ``atomization_energy`` (kcal/mol, negative): U0 minus QM9's atom references
- ``atomization_energy_per_atom`` (kcal/mol per atom, H included)
- ``zpve`` (Hartree): QM9's zero-point vibrational energy
- ``electronic_atomization_energy`` (kcal/mol): U0 minus ZPVE minus the atom references, the quantity a QC code
  computes at a fixed geometry (what a verified record holds); ``electronic_atomization_energy_per_atom``
- ``xyz``: QM9's B3LYP geometry as XYZ-file text (Angstrom)
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
from rdkit.Chem.rdMolDescriptors import CalcMolFormula

from moldesign.chem import InvalidMoleculeError, canonicalize, check_mol, parse_smiles
from moldesign.simulate.embed import to_xyz

logger = logging.getLogger(__name__)

QM9_ATOM_REFERENCES = {'H': -0.500273, 'C': -37.846772, 'N': -54.583861, 'O': -75.064579, 'F': -99.718730}
"""U0 of the isolated atoms in QM9 (Hartree, B3LYP/6-31G(2df,p))"""
HARTREE_TO_KCAL_MOL = 627.5094737775374
"""kcal/mol per Hartree (qcelemental's value)"""
QM9_SIZE = 130_831
"""Number of molecules in QM9"""
CACHE_VERSION = 3
"""Format version of the cache file (bump it when the table changes)"""

_CSV_COLUMNS = ['Index', 'SMILES', 'N_atoms', 'Elements', 'XYZ_Ang', 'InternalEnergy_0K_au', 'ZPVE_au']


def qm9_data_dir() -> Path:
    """Folder of the QM9 CSV files of the qm9pack package (located without importing it)

    Returns:
        Path of ``qm9pack/data``
    Raises:
        FileNotFoundError: if qm9pack is not installed or has no data
    """
    spec = importlib.util.find_spec('qm9pack')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError('The qm9pack package is not installed (pip install qm9pack)')
    path = Path(list(spec.submodule_search_locations)[0]) / 'data'
    if not _csv_files(path):
        raise FileNotFoundError(f'No QM9 CSV files (qm9_part*.csv) in {path}')
    return path


def _csv_files(path: Path) -> List[Path]:
    return sorted(path.glob('qm9_part*.csv'))


def cache_dir() -> Path:
    """Directory of moldesign's cached files: ``$MOLDESIGN_CACHE_DIR`` or the user cache directory"""
    env = os.environ.get('MOLDESIGN_CACHE_DIR')
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir('moldesign'))


def _source_key(files: List[Path]) -> str:
    """Hash of the cache format and of the name, size and modification time of the source files"""
    h = hashlib.sha256(f'v{CACHE_VERSION}'.encode())
    for f in files:
        st = f.stat()
        h.update(f'{f.name}:{st.st_size}:{st.st_mtime_ns}'.encode())
    return h.hexdigest()[:16]


def _build_table(files: List[Path]) -> pd.DataFrame:
    """Read the QM9 CSV files and compute the table's columns"""
    start = time.perf_counter()
    raw = pd.concat([pd.read_csv(f, usecols=_CSV_COLUMNS) for f in files], ignore_index=True)[_CSV_COLUMNS]
    logger.info(f'Read {len(raw)} QM9 rows from {len(files)} CSV files in {time.perf_counter() - start:.1f} s')

    rows = []
    n_bad = 0
    for index, smiles, n_atoms, elements, xyz, u0, zpve in raw.itertuples(index=False, name=None):
        try:
            mol = parse_smiles(smiles)
        except InvalidMoleculeError:
            n_bad += 1
            continue
        try:
            check_mol(mol)
            in_space = True
        except InvalidMoleculeError:
            in_space = False
        symbols = json.loads(elements.replace("'", '"'))
        coords = np.array(xyz.replace('[', '').replace(']', '').split(','), dtype=float).reshape(-1, 3)
        if len(symbols) != n_atoms or len(coords) != n_atoms:
            n_bad += 1
            continue
        key = canonicalize(mol)
        reference = sum(QM9_ATOM_REFERENCES[s] for s in symbols)
        atomization = (u0 - reference) * HARTREE_TO_KCAL_MOL
        electronic = (u0 - zpve - reference) * HARTREE_TO_KCAL_MOL
        rows.append((key, smiles, int(index), mol.GetNumHeavyAtoms(), int(n_atoms), CalcMolFormula(mol), in_space,
                     float(u0), atomization, atomization / n_atoms, float(zpve), electronic, electronic / n_atoms,
                     to_xyz(symbols, coords, f'QM9 {index} {key}')))
    if n_bad:
        logger.warning(f'Dropped {n_bad} QM9 rows whose SMILES RDKit cannot parse (or inconsistent geometry)')
    table = pd.DataFrame(rows, columns=['smiles', 'qm9_smiles', 'qm9_index', 'n_heavy_atoms', 'n_atoms', 'formula',
                                        'in_search_space', 'u0', 'atomization_energy',
                                        'atomization_energy_per_atom', 'zpve', 'electronic_atomization_energy',
                                        'electronic_atomization_energy_per_atom', 'xyz'])
    for col in ('qm9_index', 'n_heavy_atoms', 'n_atoms'):
        table[col] = table[col].astype(np.int64)
    logger.info(f'Built the QM9 table ({len(table)} molecules, {n_bad} dropped, '
                f'{int((~table.in_search_space).sum())} outside the search space) '
                f'in {time.perf_counter() - start:.1f} s')
    return table


def _write_atomic(table: pd.DataFrame, path: Path) -> None:
    """Write the pickle to a temporary file of the same directory, then rename it into place"""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as fp:
            pickle.dump(table, fp, protocol=pickle.HIGHEST_PROTOCOL)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shareable
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@functools.lru_cache(maxsize=None)
def _load_cached(cache_path: str, data_dir: str) -> pd.DataFrame:
    """Load the table from the cache file, building it first if missing (memoised per process)"""
    path = Path(cache_path)
    if path.is_file():
        try:
            with open(path, 'rb') as fp:
                table = pickle.load(fp)
            if isinstance(table, pd.DataFrame) and 'xyz' in table.columns:
                return table
        except Exception as exc:  # A corrupt cache is rebuilt
            logger.warning(f'Ignoring an unreadable QM9 cache {path}: {exc}')
    files = _csv_files(Path(data_dir))
    table = _build_table(files)
    _write_atomic(table, path)
    for old in path.parent.glob('qm9-*.pkl'):  # Caches of other versions of the source
        if old != path:
            old.unlink(missing_ok=True)
    logger.info(f'Cached the QM9 table in {path}')
    return table


def _cache_path() -> Path:
    return cache_dir() / f'qm9-{_source_key(_csv_files(qm9_data_dir()))}.pkl'


def _table() -> pd.DataFrame:
    return _load_cached(str(_cache_path()), str(qm9_data_dir()))


def load_qm9() -> pd.DataFrame:
    """Load QM9 (built and cached on first use)

    Returns:
        One row per QM9 molecule (see the module docstring for the columns)
    """
    return _table().copy()


def sample_molecules(n: int, seed: int = 0, in_search_space: bool = True) -> pd.DataFrame:
    """Draw random QM9 molecules, reproducibly

    Args:
        n: Number of molecules
        seed: Random seed (same seed, same molecules)
        in_search_space: Draw only molecules that obey the search-space rules
    Returns:
        ``n`` rows of the QM9 table, in random order
    Raises:
        ValueError: if ``n`` is negative or larger than the number of molecules
    """
    table = _table()
    if in_search_space:
        table = table[table['in_search_space'].to_numpy()]
    if not isinstance(n, (int, np.integer)) or n < 0 or n > len(table):
        raise ValueError(f'Cannot draw {n!r} molecules from {len(table)} QM9 molecules')
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(table), size=int(n), replace=False)
    return table.iloc[chosen].reset_index(drop=True)


@functools.lru_cache(maxsize=None)
def _energy_lookup(cache_path: str) -> Dict[str, float]:
    table = _load_cached(cache_path, str(qm9_data_dir()))
    # Several QM9 entries can share a key (stereoisomers): keep the most negative energy
    best = table.groupby('smiles', sort=False)['atomization_energy'].min()
    return best.to_dict()


def qm9_atomization_energy(smiles: str) -> Optional[float]:
    """Atomization energy of a molecule in QM9

    Args:
        smiles: SMILES string (canonicalised here)
    Returns:
        Atomization energy (kcal/mol; the lowest if QM9 holds several stereoisomers), None if not in QM9
    Raises:
        moldesign.chem.InvalidMoleculeError: if the SMILES cannot be parsed
    """
    key = canonicalize(parse_smiles(smiles))
    result = _energy_lookup(str(_cache_path())).get(key)
    return None if result is None else float(result)


__all__ = ['load_qm9', 'sample_molecules', 'qm9_atomization_energy', 'QM9_ATOM_REFERENCES', 'cache_dir',
           'qm9_data_dir']
