"""A campaign: assembled from its parameters, run under supervision, and recorded in its run directory.

In the spirit of ExaMol's ``Specification.assemble()``: :meth:`Campaign.create` (a new run) and
:meth:`Campaign.restart` (an interrupted one) check every input and open the run directory; :meth:`Campaign.run`
builds the Parsl configuration, the Colmena queues, the task server and the thinker, runs them, stops them
(Ctrl-C, SIGTERM and SIGHUP drain the QC tasks in flight; a second signal exits at once), and writes the
summary and the report. ``run.py`` is only its command line::

    from moldesign.steer.campaign import Campaign
    from moldesign.steer.params import RunParams, SessionOptions
    campaign = Campaign.create(RunParams(search_size=8), out_dir='runs', options=SessionOptions(quiet=True))
    exit_code = campaign.run()
"""
from __future__ import annotations

import errno
import logging
import multiprocessing
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from moldesign.steer.checks import (UsageError, build_config, check_out_dir, check_qc, load_config_module,
                                    workers_are_local)
from moldesign.steer.params import RunParams, SessionOptions
from moldesign import store as files
from moldesign.steer.signals import EXIT_INTERRUPTED, SetupInterrupted, StopSignals
from moldesign.store import CorruptFileError, DiskFullError, RunFileError, RunLocked, RunStore

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def qc_methods() -> List[Callable]:
    """The QC task functions (executor ``qc``)"""
    from moldesign.simulate import compute_atomization_energy, compute_reference_energy
    from moldesign.simulate.bundle import compute_atomization_energies
    return [compute_reference_energy, compute_atomization_energy, compute_atomization_energies]


def ml_methods() -> List[Callable]:
    """The ML task functions (executor ``ml``)"""
    from moldesign.sample import generate_molecules
    from moldesign.select.ranking import rank_candidates, warm_up
    return [generate_molecules, rank_candidates, warm_up]


class Campaign:
    """One campaign in its run directory (build it with :meth:`create` or :meth:`restart`)

    Args:
        params: The run's parameters
        store: The run directory, open and locked
        options: How this session runs
        initial_smiles: Initial population
        previous: What an earlier part of the run computed (restart)
        config_module: The Parsl configuration module
        parsl_config: A ready Parsl configuration instead of the module's (e.g. simulated QC in benchmarks)
        methods: Task functions instead of :func:`qc_methods`, :func:`ml_methods` (same names; benchmarks)
    """

    def __init__(self, params: RunParams, store: RunStore, options: SessionOptions, initial_smiles: Sequence[str],
                 previous: Optional[files.RunData] = None, config_module=None, parsl_config=None,
                 methods: Optional[Dict[str, List[Callable]]] = None):
        self.params, self.store, self.options = params, store, options
        self.run_dir = store.run_dir
        self.initial_smiles = list(initial_smiles)
        self.previous = previous
        self.config_module = config_module
        self.parsl_config = parsl_config
        self.methods = methods or {}
        local = config_module is None or workers_are_local(config_module)
        self.qc_spec = check_qc(params.qc, params.qc_keywords, '--qc', local)
        self.verify_spec = check_qc(params.verify_qc, params.verify_keywords, '--verify-qc', local) \
            if params.verify_qc else None
        self.agent = None  # The MolDQN agent restored for a restart
        self.notes: List[str] = []  # Warnings found while opening the run, logged when it runs
        self.thinker = None
        self.signals: Optional[StopSignals] = None
        self._server = None
        self._progress = None
        self.interrupted: Optional[str] = None
        self.wall_time = 0.

    # ------------------------------------------------------------------ assembly
    @classmethod
    def create(cls, params: RunParams, out_dir: Path, options: Optional[SessionOptions] = None,
               initial_smiles: Optional[Sequence[str]] = None, **kwargs) -> 'Campaign':
        """Check everything, then create a new run directory

        Args:
            params: The run's parameters
            out_dir: Directory in which the run directory is created
            options: How this session runs
            initial_smiles: Initial population (default: ``params.initial_count`` random QM9 molecules)
            kwargs: Passed to the constructor (``parsl_config``, ``methods``)
        Raises:
            UsageError: for any invalid input, before anything is created
        """
        options = options or SessionOptions()
        config_module = None if kwargs.get('parsl_config') else load_config_module(params.config)
        local = config_module is None or workers_are_local(config_module)
        check_qc(params.qc, params.qc_keywords, '--qc', local)
        if params.verify_qc:
            check_qc(params.verify_qc, params.verify_keywords, '--verify-qc', local)
        check_out_dir(Path(out_dir))
        _check_redis(params, options)
        if initial_smiles is None:
            from moldesign.qm9 import sample_molecules
            initial_smiles = list(dict.fromkeys(sample_molecules(params.initial_count, seed=params.seed)['smiles']))
        params = params.model_copy(update={'initial_count': len(initial_smiles)})
        run_dir = Path(out_dir) / files.make_run_name(params.model_dump(mode='json'))
        if config_module is not None:
            build_config(config_module, run_dir, params.qc_workers, params.ml_workers)  # Raises before mkdir
        run_dir = _make_run_dir(run_dir)
        store = None
        try:  # A run directory is complete (restartable) or absent: never half-made
            store = RunStore(run_dir)
            params.save(run_dir)
            store.write_json(files.INITIAL_MOLECULES, list(initial_smiles))
            store.create_record_files()
            return cls(params, store, options, initial_smiles, config_module=config_module, **kwargs)
        except BaseException as exc:
            if store is not None:
                store.close()
            shutil.rmtree(run_dir, ignore_errors=True)
            if isinstance(exc, (OSError, RunFileError)):
                raise UsageError(f'--out-dir: cannot create a run in {out_dir}: {_reason(exc)}') from None
            raise

    @classmethod
    def restart(cls, run_dir: Path, options: Optional[SessionOptions] = None, search_size: Optional[int] = None,
                config: Optional[str] = None, **kwargs) -> 'Campaign':
        """Open an interrupted run to continue it

        Args:
            run_dir: The run directory
            options: How this session runs
            search_size: A larger budget (the run's own is kept if this is smaller)
            config: Another Parsl configuration (default: the run's own)
            kwargs: Passed to the constructor
        Raises:
            UsageError: if the directory is not a run, a file of it is invalid, or another process holds it
        """
        options = options or SessionOptions()
        run_dir = Path(run_dir)
        if not (run_dir / files.RUN_PARAMS).is_file():
            raise UsageError(f'--restart: {run_dir} is not a run directory (no {files.RUN_PARAMS})')
        try:
            params = RunParams.load(run_dir)
            updates = {'search_size': max(params.search_size, search_size or 0)}
            if config is not None:
                updates['config'] = config
            params = params.model_copy(update=updates)
            initial = files.read_json(run_dir / files.INITIAL_MOLECULES, required=True)
            if not isinstance(initial, list) or not all(isinstance(s, str) for s in initial):
                raise RunFileError(f'{run_dir / files.INITIAL_MOLECULES} is not a list of SMILES')
            config_module = None if kwargs.get('parsl_config') else load_config_module(params.config)
            _check_redis(params, options)
            store = RunStore(run_dir)
        except (RunFileError, RunLocked) as exc:
            raise UsageError(f'--restart: {exc}') from None
        notes: List[str] = []
        try:
            notes += [f'The last line of {aside.name.split(".partial")[0]} was cut (an interrupted write): kept it '
                      f'in {aside.name}; appending after the last complete record' for aside in store.repair()]
            previous = files.load_run(run_dir)
            agent = _restore_agent(run_dir, previous, notes)
            params.save(run_dir)
        except BaseException as exc:
            store.close()
            if isinstance(exc, (OSError, RunFileError)):
                raise UsageError(f'--restart: {_reason(exc)}') from None
            raise
        campaign = cls(params, store, options, initial, previous=previous, config_module=config_module, **kwargs)
        campaign.agent, campaign.notes = agent, notes
        return campaign

    # ------------------------------------------------------------------ running
    def run(self) -> int:
        """Run the campaign to its end (or a stop request) and record it

        Returns:
            Exit code: 0 complete, 1 error, 130 interrupted
        """
        self.signals = StopSignals(self.run_dir, self.options.shutdown_timeout, self._request_stop, self._exit_now,
                                   before_exit=self._stop_progress)
        self.signals.install()  # From here on a signal never ends in a traceback (the imports below take a while)
        from moldesign.report.console import setup_logging
        from moldesign.report.progress import ProgressReporter
        from moldesign.steer.server import check_path_for_parsl, mark_run_processes, stop_task_server
        try:
            progress = self._progress = ProgressReporter(enabled=not self.options.quiet,
                                                         title=f'moldesign  {self.run_dir.name}')
            teardown = setup_logging(self.run_dir, terminal=progress.is_terminal, quiet=self.options.quiet,
                                     debug=self.options.debug, on_log_failure=self._log_failed)
            self.store.on_disk_full = self._disk_full_detected
            try:
                with mark_run_processes(self.run_dir):
                    logger.info(f'Run directory: {self.run_dir}' + (' (restart)' if self.previous else ''))
                    if progress.is_terminal and progress.enabled:  # Off a terminal the log line above says it
                        print(f'Run directory: {self.run_dir}' + (' (restart)' if self.previous else ''), flush=True)
                    for note in self.notes:
                        logger.warning(note)
                    self._write_description()
                    check_path_for_parsl()
                    server, queues = self._assemble(progress)
                    self._supervise(server, progress)
                    self.signals.phase = 'finishing'
                    progress.set_phase('finishing')
                    stop_task_server(server, queues, timeout=30, on_result=self._late_result)
                    self._stop_leftovers()
                self.interrupted = self.signals.interrupted
                if self.store.disk_full:
                    return self._disk_full(progress)
                return self._finish(progress)
            except SetupInterrupted as exc:
                self.signals.phase = 'finishing'
                progress.stop('interrupted')
                print(f'Interrupted ({exc}) before any task started. Continue with: python run.py --restart '
                      f'{self.run_dir}', file=sys.stderr)
                return EXIT_INTERRUPTED
            except DiskFullError as exc:
                self.signals.phase = 'finishing'
                progress.stop('failed')
                print(f'run.py: error: {exc}. Free some space, then continue with: python run.py --restart '
                      f'{self.run_dir}', file=sys.stderr)
                return EXIT_ERROR
            finally:
                progress.stop('failed')  # Still on screen only if something went wrong: draw it once more, in full
                self.store.close()
                teardown()
        finally:
            self.signals.restore()

    def _request_stop(self) -> None:
        if self.thinker is not None:
            self.thinker.request_stop()
        if self._progress is not None:
            self._progress.set_phase('stopping')

    def _stop_progress(self) -> None:
        """Before exiting at once: the live panel drawn once more in full, the cursor shown, stderr restored"""
        if self._progress is not None:
            self._progress.stop('interrupted')

    def _exit_now(self) -> None:
        """Before exiting at once: no record half-written, no process of the run left"""
        self.store.quiesce(timeout=2)
        from moldesign.steer.server import kill_process_tree
        if self._server is not None and self._server.pid is not None:
            kill_process_tree(self._server.pid)

    def _stop_leftovers(self) -> None:
        """Kill processes of the run that outlived the task server (e.g. an interchange whose parent was killed)"""
        from moldesign.steer.server import stop_stale_processes
        stop_stale_processes(self.run_dir, 'this session (outliving the task server)')

    def _log_failed(self, error: OSError) -> None:
        """runtime.log cannot be written (called once)"""
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            self.store.full(files.RUNTIME_LOG)
        else:
            logger.warning(f'{self.run_dir / files.RUNTIME_LOG} cannot be written ({error.strerror or error}); '
                           'log lines go to the console only')

    def _disk_full_detected(self, name: str) -> None:
        """The first write that failed for lack of space (any file, any thread): stop submitting

        Said once: by the thinker when it cannot write a QC record (it stops at once), otherwise at the end of
        the run (:meth:`_disk_full`), after the QC tasks in flight are drained.
        """
        logging.raiseExceptions = False  # Other handlers in this process would print a traceback per record
        logger.info(f'No space left on the device of {self.run_dir} (writing {name}): stopping')
        if self.thinker is not None:
            self.thinker.request_stop()

    def _late_result(self, result) -> None:
        """A QC result that arrives while the task server stops: written, unless the disk is full"""
        if not self.store.disk_full:
            self.thinker.record_late_result(result)

    def _disk_full(self, progress) -> int:
        """The run stopped because its disk is full: end the progress panel, say so once, and why there is no
        summary"""
        progress.stop('failed')
        if files.SIMULATION_RECORDS not in self.store.refused:  # Otherwise the thinker said so
            logger.error(f'No space left on the device of {self.run_dir} (writing {self.store.first_full}): '
                         'stopped; every record written so far is complete')
        records = len(files.read_jsonl(self.run_dir / files.SIMULATION_RECORDS)[0])
        print(f'summary.json was not written (no space left): {records} complete QC records are in '
              f'{self.run_dir}. Free some space, then continue with: python run.py --restart {self.run_dir}',
              file=sys.stderr)
        return EXIT_ERROR

    def _write_description(self) -> None:
        self.store.write_json(files.QC_SPEC, self.qc_spec.model_dump(mode='json'))
        self.store.write_json(files.HOST_INFO, files.get_host_info())
        from moldesign.steer.server import stop_stale_processes
        stop_stale_processes(self.run_dir, 'an earlier session of this run')

    def _assemble(self, progress):
        """The Parsl configuration, the queues, the task server and the thinker"""
        from threadpoolctl import threadpool_limits
        from moldesign.steer.queues import make_queues
        from moldesign.steer.server import make_task_server
        from moldesign.steer.thinker import MoleculeDesignThinker

        multiprocessing.set_start_method('fork', force=True)  # The task server is a forked child process
        # The consumer thread waits on pipes and files while other threads hold the GIL: with Python's default
        # 5 ms switch interval each of its I/O steps can wait 5 ms
        sys.setswitchinterval(0.0005)
        threadpool_limits(limits=1, user_api='blas')  # Idle BLAS threads would spin on the workers' cores
        params = self.params
        config = self.parsl_config or build_config(self.config_module, self.run_dir, params.qc_workers,
                                                   params.ml_workers)
        if params.monitor:
            from parsl.monitoring import MonitoringHub
            config.monitoring = MonitoringHub(workflow_name=f'moldesign {self.run_dir.name}',
                                              logging_endpoint=f'sqlite:///{self.run_dir / files.MONITORING_DB}',
                                              resource_monitoring_interval=10)
        (self.run_dir / files.PARSL_CONFIG).write_text(repr(config) + '\n')
        queues = make_queues(params.redishost, params.redisport or 6379, self.options.redis_password,
                             prefix=self.run_dir.name)
        server = make_task_server(queues, config, self.methods.get('qc') or qc_methods(),
                                  self.methods.get('ml') or ml_methods(), qc_timeout=params.qc_timeout or None)
        previous = self.previous
        records = [r for r in (previous.simulation if previous else []) if r.get('smiles')]
        self.thinker = MoleculeDesignThinker(
            queues, self.store, params, self.qc_spec, agent=self._load_agent(), initial_smiles=self.initial_smiles,
            verify_spec=self.verify_spec, reference_energies=_references(previous), previous=records,
            start_batch=_next_batch(previous), progress=progress, shutdown_timeout=self.options.shutdown_timeout)
        return server, queues

    def _load_agent(self):
        """The MolDQN agent: restored by :meth:`restart`, else a new one"""
        if self.agent is not None:
            logger.info('Restored the MolDQN agent (weights and exploration schedule)')
            return self.agent
        from moldesign.sample import DQNAgent
        return DQNAgent(seed=self.params.seed, epsilon_decay=0.97)

    def _supervise(self, server, progress) -> None:
        """Start the task server and the thinker; wait for the thinker, watching the task server"""
        thinker = self.thinker
        from moldesign.steer.watch import BlockWatch
        watch = BlockWatch(self.run_dir, self.config_module, thinker.silent_executors,
                           after=self.options.block_pending_warning)
        start = time.monotonic()
        self._server = server
        if self.store.disk_full:  # Found while setting up (runtime.log)
            raise DiskFullError(errno.ENOSPC, f'No space left on the device of {self.run_dir}')
        self.signals.phase = 'running'
        if progress.is_terminal or not self.options.debug:
            # The task server's own lines and tracebacks go to runtime.log: they would cut through the panel, and
            # this process reports the server's failures in one line
            from moldesign.report.console import children_off_console
            with children_off_console(self.run_dir):
                server.start()
        else:
            server.start()
        progress.start()
        try:
            thinker.start()
            while thinker.is_alive():
                thinker.join(0.25)
                watch.check()
                if not server.is_alive() and thinker.is_alive() and not thinker.aborted.is_set():
                    thinker.abort(f'the task server exited unexpectedly (exit code {server.exitcode}); '
                                  f'see {self.run_dir / files.RUNTIME_LOG} and {self.run_dir / files.PARSL_DIR}')
        finally:
            self.wall_time = time.monotonic() - start

    def _finish(self, progress) -> int:
        """Write summary.json and the report, end the progress panel, print the best molecules, choose the exit
        code"""
        from moldesign.report.summary import print_summary, write_report_safely, write_summary
        from moldesign.steer.thinker import WorkersFailed
        thinker = self.thinker
        errors = [f'{type(e).__name__}: {e}' for e in thinker.errors]
        summary = write_summary(self.run_dir, thinker, self.params, self.wall_time, self.interrupted, errors)
        failed_start = [e for e in thinker.errors if isinstance(e, WorkersFailed)]
        interrupted = self.interrupted or not summary['complete']
        report = write_report_safely(self.run_dir) if self.options.report and not failed_start else None
        progress.stop('failed' if errors else 'interrupted' if interrupted else 'complete')
        if failed_start:  # A configuration problem: one line, no restart advice (a restart would fail the same way)
            print(f'run.py: error: {failed_start[0]}; fix --config {self.params.config} '
                  f'(details: {self.run_dir / files.RUNTIME_LOG})', file=sys.stderr)
            return EXIT_ERROR
        print_summary(self.run_dir, summary, report)
        if errors:
            for message in errors:
                logger.error(f'Run ended with an error: {message}')
            print(f'Continue with: python run.py --restart {self.run_dir}', file=sys.stderr)
            return EXIT_ERROR
        if interrupted:
            print(f'Interrupted ({self.interrupted or "stopped"}). Continue with: python run.py --restart '
                  f'{self.run_dir}', file=sys.stderr)
            return EXIT_INTERRUPTED
        if summary['exhausted']:
            print(f'The search ended early: no candidate left to try ({summary["evaluated_steered"]} of '
                  f'{self.params.search_size} steered molecules computed; --sources moldqn keeps proposing)',
                  file=sys.stderr)
        return EXIT_OK


def _check_redis(params: RunParams, options: SessionOptions) -> None:
    """Connect to the Redis server once, so a wrong host or password is one line before anything is created"""
    if params.redishost is None:
        return
    from moldesign.steer.queues import make_queues
    try:
        make_queues(params.redishost, params.redisport or 6379, options.redis_password, prefix='moldesign-check')
    except ConnectionError as exc:
        raise UsageError(f'--redishost: {exc}') from None


def _make_run_dir(run_dir: Path) -> Path:
    """Create a new run directory; another run started in the same second with the same parameters gets ``_2``"""
    for attempt in range(2, 1000):
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
            return run_dir
        except FileExistsError:
            run_dir = run_dir.with_name(f'{run_dir.name.split("_")[0]}_{attempt}')
        except OSError as exc:
            raise UsageError(f'--out-dir: cannot create {run_dir}: {_reason(exc)}') from None
    raise UsageError(f'--out-dir: too many runs named {run_dir.name.split("_")[0]}')


def _reason(exc: BaseException) -> str:
    """An error in a few words: the OS's reason, else the message"""
    if isinstance(exc, OSError) and exc.strerror:
        return f'{exc.strerror} ({exc.filename})' if exc.filename else exc.strerror
    return str(exc)


def _restore_agent(run_dir: Path, previous: files.RunData, notes: List[str]):
    """The MolDQN agent of an interrupted run, None if there is none to restore

    Raises:
        UsageError: if ``agent.pkl`` is truncated or corrupt (deleting it starts a new agent)
    """
    try:
        agent = files.load_agent(run_dir)
    except CorruptFileError as exc:
        raise UsageError(f'--restart: {exc}') from None
    except RunFileError as exc:
        notes.append(f'{exc}: starting a new MolDQN agent')
        return None
    if agent is None and previous.rl:
        notes.append(f'{run_dir / files.AGENT} is missing although the run made {len(previous.rl)} MolDQN call(s): '
                     'starting a new MolDQN agent')
    return agent


def _references(previous: Optional[files.RunData]) -> Dict[str, Dict[str, float]]:
    """Atom energies an earlier part of the run computed: spec name -> element -> Hartree"""
    found: Dict[str, Dict[str, float]] = {}
    for record in (previous.simulation if previous else []):
        if record.get('phase') == 'reference' and record.get('success'):
            spec = record.get('qc_spec') or (previous.qc_spec or {}).get('name')
            found.setdefault(spec, {})[record['element']] = record['value']['energy']
    return found


def _next_batch(previous: Optional[files.RunData]) -> int:
    """Number of the next screening batch of a restarted run"""
    if previous is None:
        return 0
    batches = [r.get('batch') for r in previous.simulation + previous.screening]
    batches = [b for b in batches if isinstance(b, int) and b >= 0]
    return max(batches) + 1 if batches else 0
