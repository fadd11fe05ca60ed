"""The record lines a campaign writes for each completed task, made from Colmena results.

A record is one JSON object per task (per molecule for QC) in the run directory's ``*.jsonld`` files: the task's
identity and outcome, the application's bookkeeping (SMILES, phase, batch, rank, prediction), the result (the QC
record in Hartree and kcal/mol), and Colmena's timestamps, timings and worker information.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from colmena.models import Result

_TIME_KEYS = ('running', 'serialize_inputs', 'deserialize_inputs', 'serialize_results', 'deserialize_results')


def failure_message(result: Result) -> str:
    """One-line reason of a failed task (the last line of its exception)"""
    if result.failure_info is None or not result.failure_info.exception:
        return 'unknown failure'
    return result.failure_info.exception.strip().splitlines()[-1]


STARTUP_FAILURES = ('TooManyJobFailuresError', 'BadStateException', 'ScalingFailed', 'SubmitException')
"""Parsl exceptions that mean the workers themselves could not start (a configuration problem, not a molecule's)"""


def startup_failure(result: Result) -> Optional[str]:
    """Why the workers could not start, if that is why a task failed (one line), else None"""
    text = (result.failure_info.exception if result.failure_info else '') or ''
    if not any(name in text for name in STARTUP_FAILURES):
        return None
    text = text.encode().decode('unicode_escape', errors='replace') if '\\n' in text else text
    lines = [line.strip(" \t'\")") for line in text.replace('stderr=', '\n').splitlines()]
    errors = [line for line in lines if 'error' in line.lower() and not line.startswith(STARTUP_FAILURES)]
    return (errors or [line for line in lines if line] or ['unknown'])[0][:300]


def task_record(result: Result, **fields) -> Dict[str, Any]:
    """The common part of a record line: identity, success, timings and worker of a Colmena result

    Args:
        result: A completed Colmena result
        fields: The application's fields of the record
    Returns:
        Record (strict-JSON conversion happens when it is written)
    """
    return {
        'task_id': result.task_id,
        'method': result.method,
        'success': bool(result.success),
        **fields,
        'failure_info': result.failure_info.model_dump() if result.failure_info is not None else None,
        'task_info': result.task_info,
        'timestamp': result.timestamp.model_dump(),
        'time': {k: getattr(result.time, k) for k in _TIME_KEYS},
        'worker_info': result.worker_info.model_dump() if result.worker_info is not None else None,
        'retries': result.retries,
    }


def molecule_record(result: Result, info: Dict[str, Any], value: Optional[Dict[str, Any]], objective: Optional[str],
                    evaluation: Optional[int], error: Optional[str] = None, **fields) -> Dict[str, Any]:
    """The record of one molecule computed by a QC task (a bundle task gives one record per molecule)

    Args:
        result: The completed Colmena result
        info: The molecule's bookkeeping (smiles, phase, batch, rank, predicted, predicted_std, source, qc_spec)
        value: The QC record (``AtomizationRecord`` as a dict), None if the molecule failed
        objective: Name of the objective; its value is copied to the record's ``objective`` field
        evaluation: 1-based count of the search-level evaluations (None for verification)
        error: Why the molecule failed, when the task itself succeeded (bundles)
        fields: More fields (e.g. the value at the search's level, for verification)
    Returns:
        The record
    """
    record = task_record(result, smiles=info['smiles'], element=None, phase=info['phase'], evaluation=evaluation,
                         batch=info.get('batch'), rank=info.get('rank'), predicted=info.get('predicted'),
                         predicted_std=info.get('predicted_std'), source=info.get('source'),
                         qc_spec=info.get('qc_spec'), objective=value[objective] if value else None,
                         value=value, **fields)
    if error is not None:
        record['success'] = False
        record['failure_info'] = {'exception': error, 'traceback': None}
    return record
