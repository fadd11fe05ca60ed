"""Reading a run directory, finished or interrupted, for a restart and for the report."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from moldesign.store.files import (HOST_INFO, INITIAL_MOLECULES, QC_SPEC, RECORD_FILES, REFERENCE_ENERGIES,
                                   RUN_PARAMS, SUMMARY, RunFileError, read_json, read_jsonl)

logger = logging.getLogger(__name__)


@dataclass
class RunData:
    """Everything a run directory holds, parsed"""

    run_dir: Path
    """Run directory"""
    run_params: Dict[str, Any] = field(default_factory=dict)
    """Content of run_params.json (empty if missing)"""
    qc_spec: Optional[Dict[str, Any]] = None
    """Content of qc_spec.json"""
    host_info: Optional[Dict[str, Any]] = None
    """Content of host_info.json"""
    reference_energies: Optional[Dict[str, Any]] = None
    """Content of reference_energies.json: Hartree per element, for each QC specification name"""
    initial_molecules: Optional[List[str]] = None
    """Content of initial_molecules.json"""
    summary: Optional[Dict[str, Any]] = None
    """Content of summary.json; None for an interrupted run"""
    simulation: List[Dict[str, Any]] = field(default_factory=list)
    """QC records (molecules and reference atoms, failures included)"""
    rl: List[Dict[str, Any]] = field(default_factory=list)
    """Generator (MolDQN) task records"""
    screening: List[Dict[str, Any]] = field(default_factory=list)
    """Screening (ranking) task records"""
    skipped_lines: Dict[str, int] = field(default_factory=dict)
    """Record file name -> number of unreadable lines skipped"""

    @property
    def objective(self) -> str:
        """Name of the record field minimised by the run"""
        return self.run_params.get('objective') or 'atomization_energy'

    @property
    def qc_workers(self) -> Optional[int]:
        """Number of QC workers the run kept busy, None if unknown"""
        value = self.run_params.get('qc_workers') or self.run_params.get('parallel_guesses')
        return int(value) if value else None

    @property
    def finished(self) -> bool:
        """Whether the run wrote its summary (interrupted runs do not)"""
        return self.summary is not None

    @property
    def molecule_records(self) -> List[Dict[str, Any]]:
        """QC records of molecules at the search's level (not atoms, not verification), in evaluation order"""
        records = [(i, r) for i, r in enumerate(self.simulation) if r.get('smiles') and r.get('phase') != 'verify']
        records.sort(key=lambda ir: (_int_or(ir[1].get('evaluation'), math.inf), ir[0]))
        return [r for _, r in records]

    @property
    def verify_records(self) -> List[Dict[str, Any]]:
        """QC records of the verification of the best molecules at a higher level"""
        return [r for r in self.simulation if r.get('phase') == 'verify']


def _int_or(value: Any, default: float) -> float:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def load_run(run_dir: Union[str, Path], strict: bool = False) -> RunData:
    """Read a run directory, finished or interrupted

    Args:
        run_dir: Run directory
        strict: Raise on an invalid JSON document (restart) instead of leaving its field empty (report)
    Returns:
        The parsed content; missing files give empty fields
    Raises:
        FileNotFoundError: if ``run_dir`` is not a directory
        RunFileError: in strict mode, if a JSON document is invalid
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f'Run directory not found: {run_dir}')

    def _read(name: str) -> Optional[Any]:
        try:
            return read_json(run_dir / name)
        except RunFileError as exc:
            if strict:
                raise
            logger.warning(str(exc))
            return None

    run = RunData(run_dir=run_dir, run_params=_read(RUN_PARAMS) or {}, qc_spec=_read(QC_SPEC),
                  host_info=_read(HOST_INFO), reference_energies=_read(REFERENCE_ENERGIES),
                  initial_molecules=_read(INITIAL_MOLECULES), summary=_read(SUMMARY))
    for attr, name in RECORD_FILES.items():
        records, skipped = read_jsonl(run_dir / name)
        setattr(run, attr, records)
        if skipped:
            run.skipped_lines[name] = skipped
    logger.info(f'Read {run_dir}: {len(run.simulation)} QC, {len(run.rl)} generator and '
                f'{len(run.screening)} screening records'
                + ('' if run.finished else ' (no summary.json: interrupted?)'))
    return run
