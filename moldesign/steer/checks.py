"""Checking a campaign's inputs before anything is created: each mistake is one line naming the option.

Everything that can be checked before the run directory exists is checked here: the QC specification (with
the program where it runs here), the Parsl configuration (it must import and build), the initial molecules,
the output directory, the Redis server. The configuration modules live in the repository's ``config/``
(beside this package) or in any ``.py`` file given by path.
"""
from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional

from moldesign.chem import InvalidMoleculeError, validate_smiles
from moldesign.simulate.base import QCSpec, get_spec

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'config'
"""The repository's Parsl configurations, one module per machine"""


class UsageError(ValueError):
    """Invalid input: reported in one line that names the option"""


def known_configs() -> List[str]:
    """Names of the configurations in ``config/``"""
    return sorted(p.stem for p in CONFIG_DIR.glob('*.py') if not p.stem.startswith('_'))


def load_config_module(name: str) -> ModuleType:
    """Import a Parsl configuration: ``config/<name>.py``, or a path to a ``.py`` file

    Raises:
        UsageError: if there is no such configuration, or it does not import, or it has no ``make_config``
    """
    path = Path(name)
    if path.suffix != '.py':
        path = CONFIG_DIR / f'{name}.py'
    if not path.is_file():
        raise UsageError(f'--config: no configuration {name!r} (known: {", ".join(known_configs())}; '
                         f'or give the path of a .py file)')
    spec = importlib.util.spec_from_file_location(f'moldesign_config_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UsageError(f'--config: {path} does not import: {type(exc).__name__}: {exc}') from None
    if not hasattr(module, 'make_config'):
        raise UsageError(f'--config: {path} has no make_config(run_dir, qc_workers, ml_workers) function')
    return module


def default_qc_workers(module: ModuleType) -> int:
    """QC workers a configuration provides (its ``default_qc_workers()``, else 1)

    Raises:
        UsageError: if the configuration cannot tell (e.g. an allocation configuration outside its allocation)
    """
    if not hasattr(module, 'default_qc_workers'):
        return 1
    try:
        return int(module.default_qc_workers())
    except (ValueError, OSError, RuntimeError) as exc:
        raise UsageError(f'--config: {exc}') from None


def workers_are_local(module: ModuleType) -> bool:
    """Whether a configuration runs its workers on this host (its ``LOCAL_WORKERS`` flag; True for ``local``)"""
    return bool(getattr(module, 'LOCAL_WORKERS', Path(module.__file__).stem == 'local'))


def build_config(module: ModuleType, run_dir: Path, qc_workers: int, ml_workers: int) -> Any:
    """Build the Parsl configuration of a run (nothing is started or submitted)

    Raises:
        UsageError: if the configuration cannot be built or lacks the ``qc``/``ml`` executors
    """
    try:
        config = module.make_config(run_dir, qc_workers, ml_workers)
    except (ValueError, OSError) as exc:
        raise UsageError(f'--config: {exc}') from None
    labels = {e.label for e in config.executors}
    if not {'qc', 'ml'} <= labels:
        raise UsageError(f'--config: {module.__file__} must build executors labelled qc and ml '
                         f'(has: {", ".join(sorted(labels))})')
    return config


def check_qc(name: str, keywords: Optional[Dict[str, Any]], option: str, local_workers: bool) -> QCSpec:
    """Parse and check a QC specification

    Raises:
        UsageError: naming the option
    """
    from moldesign.simulate.validate import validate_spec
    try:
        spec = get_spec(name, **(keywords or {}))
        validate_spec(spec, local_workers=local_workers)
    except ValueError as exc:
        raise UsageError(f'{option}: {exc}') from None
    return spec


def read_initial_smiles(path: Path, skip_invalid: bool) -> List[str]:
    """Read and validate an initial population file (one SMILES per line; text after white space is ignored;
    lines starting with ``#`` are comments: a ``#`` inside a SMILES is a triple bond)

    Returns:
        Canonical SMILES (duplicates removed, order kept)
    Raises:
        UsageError: listing every invalid line with its number, unless ``skip_invalid``
    """
    if not path.is_file():
        raise UsageError(f'--initial-smiles: {path} is not a file')
    try:
        text = path.read_text()
        if '\0' in text:  # Valid UTF-8 (e.g. all zeros), but not text
            raise UnicodeDecodeError('utf-8', b'\0', 0, 1, 'NUL character')
    except UnicodeDecodeError:
        raise UsageError(f'--initial-smiles: {path} is not a text file (expected one SMILES per line)') from None
    except OSError as exc:
        raise UsageError(f'--initial-smiles: cannot read {path}: {exc.strerror or exc}') from None
    good, bad = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        try:
            good.append(validate_smiles(line.split()[0]))
        except InvalidMoleculeError as exc:
            bad.append(f'line {lineno}: {exc}')
    if bad:
        message = f'--initial-smiles: {len(bad)} invalid line(s) in {path}: ' + '; '.join(bad)
        if not skip_invalid:
            raise UsageError(message + ' (fix them, or pass --skip-invalid to skip them)')
        logger.warning(message + ' -- skipped')
    if not good:
        raise UsageError(f'--initial-smiles: no valid molecule in {path}')
    return list(dict.fromkeys(good))


def check_out_dir(path: Path) -> None:
    """Make sure run directories can be created in ``path`` (nothing is created here)

    Raises:
        UsageError: if it, or its nearest existing parent, is not a writable directory
    """
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f'--out-dir: {existing} is not a directory')
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UsageError(f'--out-dir: cannot write in {existing}: {exc.strerror or exc}') from None
