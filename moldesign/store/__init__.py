"""The run directory: its file names, its one JSON-Lines reader and one atomic writer, its lock, and loading a run.

A campaign writes everything into one directory, ``runs/<UTC time>-<hash>/`` (names in :data:`FILES`). Record
files are JSON Lines (``*.jsonld``): one strict-JSON object per line (no bare ``NaN``), appended and flushed as
soon as the thinker receives the result, and synced to disk (see :class:`RunStore`), so a crash or a Ctrl-C
never loses a completed QC result. JSON documents are written atomically (temporary file, then rename).

- :class:`RunStore` writes a run: lock (one process per run directory), repair of a record file whose last line
  was cut, appends, the MolDQN agent's checkpoint.
- :func:`load_run` reads a run (finished or interrupted) into a :class:`RunData`, for restarts and reports.
"""
from moldesign.store.files import (AGENT, FIGURES, FILES, HOST_INFO, INITIAL_MOLECULES, LOCK, MONITORING_DB,
                                   PARSL_CONFIG, PARSL_DIR, QC_SPEC, RECORD_FILES, REFERENCE_ENERGIES, REPORT,
                                   RL_RECORDS,
                                   RUN_PARAMS, RUNTIME_LOG, SCREENING_RECORDS, SIMULATION_RECORDS, SUMMARY,
                                   DiskFullError, RunFileError, RunLocked, dump_json, get_host_info, make_run_name,
                                   read_json, read_jsonl, repair_jsonl, to_strict_json, write_atomic)
from moldesign.store.reader import RunData, load_run
from moldesign.store.writer import RunStore, load_agent

__all__ = ['AGENT', 'FIGURES', 'FILES', 'HOST_INFO', 'INITIAL_MOLECULES', 'LOCK', 'MONITORING_DB', 'PARSL_CONFIG',
           'PARSL_DIR', 'QC_SPEC', 'RECORD_FILES', 'REFERENCE_ENERGIES', 'REPORT', 'RL_RECORDS', 'RUN_PARAMS',
           'RUNTIME_LOG', 'SCREENING_RECORDS', 'SIMULATION_RECORDS', 'SUMMARY', 'DiskFullError', 'RunFileError',
           'RunLocked', 'dump_json', 'get_host_info', 'make_run_name', 'read_json', 'read_jsonl', 'repair_jsonl',
           'to_strict_json', 'write_atomic', 'RunData', 'load_run', 'RunStore', 'load_agent']
