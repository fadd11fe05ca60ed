"""The parameters of a campaign: one typed object, written to and read from ``run_params.json`` here only.

Everything that defines what a run computes lives in :class:`RunParams` (a restart reuses it); how one
session of it behaves on this machine (console, shutdown patience, report) is :class:`SessionOptions`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from moldesign.store import RUN_PARAMS, RunFileError, dump_json, read_json

logger = logging.getLogger(__name__)

OBJECTIVES = ('atomization_energy', 'atomization_energy_per_atom')
"""Quantities a campaign can minimise (fields of the QC record, kcal/mol)"""
SOURCES = ('moldqn', 'neighbours')
"""Where search candidates come from: MolDQN episodes, and the one/two-edit neighbourhoods of the best molecules"""
QUEUE_POLICIES = ('rerank', 'recency')
"""How the priority queue orders candidates (see :mod:`moldesign.select.pool`)"""
ACQUISITIONS = ('greedy', 'ucb', 'ei')
"""How a candidate's predicted mean and uncertainty become its score (see :mod:`moldesign.select.acquisition`)"""
DEFAULT_SEARCH_SIZE = 32
DEFAULT_VERIFY_QC = 'pyscf/b3lyp/6-31g*//xtb'
"""The verification of a GFN2-xTB search by default: B3LYP (QM9's functional) on the GFN2-xTB geometry, in a basis
small enough for a laptop (1-2 min per 9-heavy-atom molecule on one core) that still exposes GFN2-xTB's artefacts
(O=C1OC(=O)C(=O)O1: -166.3 kcal/mol per atom with GFN2-xTB, -125.2 with B3LYP/6-31G*, -127.2 in QM9's basis)"""
DEFAULT_VERIFY_KEYWORDS = {'cartesian': False}
"""Spherical d functions for the default verification: 1.6 times faster than the Cartesian ones of QM9's Gaussian"""
DEFAULT_VERIFY_TOP = 2


class RunParams(BaseModel):
    """What a campaign computes and how it steers (``run_params.json``)"""

    model_config = ConfigDict(extra='forbid', populate_by_name=True)

    objective: Literal['atomization_energy', 'atomization_energy_per_atom'] = 'atomization_energy'
    search_size: int = Field(DEFAULT_SEARCH_SIZE, ge=0, description='Steered molecules to evaluate with QC')
    initial_count: int = Field(16, ge=1, description='Molecules of the initial population')
    initial_smiles_file: Optional[str] = Field(None, description='File the initial population came from (None: QM9)')
    seed: int = 1

    qc: str = Field('xtb', description='QC specification name, e.g. "xtb" or "pyscf/b3lyp/6-31g(2df,p)//xtb"')
    qc_keywords: Dict[str, Any] = Field(default_factory=dict)
    qc_workers: int = Field(1, ge=1, validation_alias=AliasChoices('qc_workers', 'parallel_guesses'),
                            description='QC workers kept busy')
    qc_prefetch: int = Field(1, ge=0, description='QC tasks waiting at the workers beyond one per worker')
    qc_bundle: int = Field(1, ge=1, description='Molecules per QC task')
    qc_timeout: float = Field(0., ge=0, description='Wall-time limit of one QC task (s); 0: none')
    qc_retries: int = Field(0, ge=0, description='Retries of a failed QC task')

    ml_workers: int = Field(2, ge=1, description='ML workers: MolDQN and screening run side by side with 2 or more')
    batch_size: int = Field(64, ge=1, description='Candidates a screening of a new MolDQN batch enqueues')
    rl_episodes: int = Field(16, ge=1)
    rl_steps: Optional[int] = Field(None, ge=1)
    sources: List[Literal['moldqn', 'neighbours']] = Field(default_factory=lambda: list(SOURCES))
    queue_policy: Literal['rerank', 'recency'] = 'rerank'
    acquisition: Literal['greedy', 'ucb', 'ei'] = 'greedy'
    rerank_every: int = Field(1, ge=1, description='Re-rank the candidates after at least this many new results')
    rerank_interval: float = Field(0., ge=0, description='... and at least this many seconds after the last one')
    interleave: bool = Field(True, description='False: the batch baseline (ML waits for QC, QC for ML)')

    verify_qc: Optional[str] = Field(None, description='Higher-level QC specification that verifies the best')
    verify_keywords: Dict[str, Any] = Field(default_factory=dict)
    verify_top: int = Field(0, ge=0, description='Verify every molecule that enters the top K by the search method')
    verify_learn: bool = Field(True, description='Correct the search\'s model toward the verified values')
    verify_share: float = Field(0.5, ge=0, le=1, description='Largest share of the QC workers verifying while the '
                                                             'search runs')

    config: str = Field('local', description='Parsl configuration: name in config/ or path to a .py file')
    redishost: Optional[str] = None
    redisport: Optional[int] = None
    monitor: bool = Field(False, description="Record Parsl's monitoring database in the run directory")

    @field_validator('sources')
    @classmethod
    def _some_source(cls, value: List[str]) -> List[str]:
        if not value:
            raise ValueError('at least one source of candidates is needed (moldqn, neighbours)')
        return list(dict.fromkeys(value))

    def save(self, run_dir: Path) -> None:
        """Write ``run_params.json`` into a run directory"""
        dump_json(self.model_dump(mode='json'), Path(run_dir) / RUN_PARAMS)

    @classmethod
    def load(cls, run_dir: Path) -> 'RunParams':
        """Read ``run_params.json`` of a run directory

        Raises:
            RunFileError: if it is missing, not JSON, or not valid parameters (the message names the file)
        """
        path = Path(run_dir) / RUN_PARAMS
        data = read_json(path, required=True)
        if not isinstance(data, dict):
            raise RunFileError(f'{path} does not hold a JSON object')
        known = set(cls.model_fields) | {'parallel_guesses'}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning(f'{path}: ignoring unknown parameter(s) {", ".join(unknown)} (written by another version)')
        try:
            return cls.model_validate({k: v for k, v in data.items() if k in known})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = '.'.join(str(x) for x in first['loc'])
            raise RunFileError(f'{path}: invalid parameter {where}: {first["msg"]}') from None


@dataclass
class SessionOptions:
    """How one session of a campaign runs here (not part of the run's identity)"""

    quiet: bool = False
    """No live progress display"""
    report: bool = True
    """Write report.md and figures at the end"""
    shutdown_timeout: float = 60.
    """Seconds to wait for in-flight QC tasks after a stop request"""
    debug: bool = False
    """Show tracebacks on the console"""
    redis_password: Optional[str] = None
    """Password of the Redis server (never written to disk)"""
    block_pending_warning: float = 300.
    """Seconds an executor may stay without any result before the console says why (0: never)"""
