"""Pieces shared by the cluster configurations (private: ``--config`` does not list modules starting with ``_``).

- :func:`thread_exports`: the thread-count environment of a worker;
- :func:`worker_address`: the address workers connect back to, refusing loopback unless asked for explicitly;
- :func:`activation_lines`: runs ``ENV_ACTIVATION`` in a job and stops the job, with a message in its stderr,
  if that fails or leaves Parsl's ``process_worker_pool.py`` off ``PATH``;
- :func:`startup_errors`: those messages, read back from a run's job stderr files;
- :func:`pending_jobs`: Slurm jobs waiting in the queue, with Slurm's reason (e.g. ``Resources``);
- :func:`slurm_allocation_nodes`, :func:`pbs_allocation_nodes`, :func:`split_nodes`: the nodes of the
  allocation ``run.py`` runs in, and their split between the ``qc`` and ``ml`` executors.

A copy of a configuration outside ``config/`` still imports this module: ``run.py`` runs from the repository.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from parsl.addresses import address_by_hostname, address_by_interface
from parsl.launchers.base import Launcher

logger = logging.getLogger(__name__)

ACTIVATION_FAILED = 97
"""Exit status of a job whose ENV_ACTIVATION failed (shown by ``sacct``/``qstat -x`` and in Parsl's logs)"""


# ---------------------------------------------------------------------- worker environment
def thread_exports(threads: int, interop: int = 1) -> str:
    """``export`` line giving a worker ``threads`` OpenMP/BLAS/TensorFlow threads

    Args:
        threads: Threads of one task (OpenMP, MKL, OpenBLAS, TensorFlow intra-op)
        interop: TensorFlow inter-op threads
    """
    return (f'export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} '
            f'TF_NUM_INTRAOP_THREADS={threads} TF_NUM_INTEROP_THREADS={interop} TF_CPP_MIN_LOG_LEVEL=2')


def activation_lines(env_activation: str, source: str) -> str:
    """Shell lines that activate the workers' environment in a job, or end the job with a clear message

    A job inherits the ``PATH`` of the shell that submitted it (unless the site sets ``SBATCH_EXPORT=NONE``),
    and ``a; b`` never fails as a whole: a wrong ``ENV_ACTIVATION`` would otherwise go unnoticed, or end as
    ``command not found`` far from its cause. Here the activation's exit status is checked, then that
    ``process_worker_pool.py`` is on ``PATH``; either failure writes one line starting with ``moldesign:`` to
    the job's stderr (``runs/<name>/parsl/000/submit_scripts/*.stderr``) and exits with status
    :data:`ACTIVATION_FAILED`.

    Args:
        env_activation: The configuration's ``ENV_ACTIVATION`` (shell commands; may be empty)
        source: The configuration's file (``__file__``), named in the message
    Returns:
        Shell lines, ending with a newline
    """
    activation = env_activation.strip()
    shown, where = shlex.quote(activation), shlex.quote(str(source))
    lines = ['# Activate the environment (ENV_ACTIVATION); stop the job if that fails']
    if activation:
        lines += ['{ ' + activation, '}',
                  f'_status=$?; if [ $_status -ne 0 ]; then echo "moldesign: ENV_ACTIVATION of "{where}" failed '
                  f'with exit status $_status: "{shown} >&2; exit {ACTIVATION_FAILED}; fi']
    lines += [f'command -v process_worker_pool.py >/dev/null 2>&1 || {{ echo "moldesign: process_worker_pool.py '
              f'(Parsl) is not on PATH after ENV_ACTIVATION of "{where}" ("{shown}"); PATH=$PATH" >&2; '
              f'exit {ACTIVATION_FAILED}; }}',
              'echo "moldesign: workers start from $(command -v process_worker_pool.py)" >&2']
    return '\n'.join(lines) + '\n'


def worker_init(env_activation: str, source: str, threads: int, extra: Sequence[str] = (),
                interop: int = 1) -> str:
    """A job's ``worker_init``: checked activation, then thread exports and ``extra`` lines

    Ends with a newline: Parsl's SlurmProvider appends ``export PARSL_CORES=...`` right after it.
    """
    return activation_lines(env_activation, source) + '\n'.join([thread_exports(threads, interop), *extra]) + '\n'


def pinned_cores(workers: int, threads: int) -> str:
    """Parsl ``cpu_affinity`` giving worker ``i`` the cores ``i*threads`` to ``(i+1)*threads-1``"""
    ranges = [f'{i * threads}' if threads == 1 else f'{i * threads}-{(i + 1) * threads - 1}' for i in range(workers)]
    return 'list:' + ':'.join(ranges)


SLURM_STEP_EXPORT = 'export SLURM_EXPORT_ENV=ALL'
"""In a Slurm job: ``srun`` steps get the job's (activated) environment even where the site sets
``SBATCH_EXPORT=NONE`` (then ``SLURM_EXPORT_ENV=NONE`` in the job, and a step fails with
``execve(): bash: No such file or directory``)"""


def startup_errors(run_dir: Path) -> List[str]:
    """Why worker jobs of a run stopped before starting workers: their ``moldesign:`` lines
    (see :func:`activation_lines`)

    For a console message when no worker connects: reads every job's stderr under ``run_dir/parsl/*/submit_scripts``.

    Returns:
        ``'<job script>.stderr: moldesign: ...'`` for each failure line, oldest run first
    """
    found = []
    for path in sorted(Path(run_dir).glob('parsl/*/submit_scripts/*.stderr')):
        for line in path.read_text(errors='replace').splitlines():
            if line.startswith('moldesign:') and 'workers start from' not in line:
                found.append(f'{path.name}: {line}')
    return found


# ---------------------------------------------------------------------- address of the thinker's host
def is_loopback(address: str) -> bool:
    """Whether a host name or IP address resolves to a loopback address (127.x, ::1)"""
    try:
        resolved = socket.getaddrinfo(address, None)
    except socket.gaierror:
        return False
    return any(ipaddress.ip_address(info[4][0].split('%')[0]).is_loopback for info in resolved)


def worker_address(source: str, address: Optional[str], interface: Optional[str],
                   interface_required: bool = True) -> str:
    """Address of this host (the thinker's) that workers on other nodes connect to

    Args:
        source: The configuration's file (``__file__``), named in messages
        address: The configuration's ``ADDRESS``: used as given when set (loopback allowed: only for a
            cluster whose nodes are all this host, e.g. emulated nodes in tests)
        interface: The configuration's ``INTERFACE``: the address of that network interface; None: the host name
        interface_required: If False, a missing interface falls back to the host name with a warning
            (so that a site's configuration can be inspected elsewhere)
    Returns:
        The address
    Raises:
        ValueError: if the interface does not exist (when required), or the address found is a loopback
            address, which workers on other nodes cannot reach
    """
    if address:
        return address
    how = 'the host name'
    if interface:
        try:
            found = address_by_interface(interface)
            how = f'interface {interface!r}'
        except OSError:
            if interface_required:
                raise ValueError(f'{source}: this host has no network interface {interface!r} '
                                 f'(INTERFACE; list them with "ip -br addr")') from None
            found = address_by_hostname()
            logger.warning(f'No network interface {interface!r} on this host; workers will connect to {found}')
    else:
        found = address_by_hostname()
    if is_loopback(found):
        raise ValueError(f'{source}: the workers\' address from {how} is {found}, a loopback address '
                         f'that workers on other nodes cannot reach (e.g. Debian\'s "127.0.1.1 <hostname>" line in '
                         f'/etc/hosts). Set INTERFACE to the network interface the compute nodes reach '
                         f'("ip -br addr" lists them, e.g. ib0 or eth0), or ADDRESS to this host\'s address on it')
    return found


# ---------------------------------------------------------------------- Slurm queue
def pending_jobs(job_ids: Sequence[str], squeue: str = 'squeue') -> List[Tuple[str, str, str]]:
    """Which of these Slurm jobs wait in the queue, and why

    For a console warning when a block stays pending: ``PD (Resources)`` forever usually means the request
    cannot fit next to the other job (e.g. two ``--exclusive`` jobs on a one-node partition, or a queue
    that runs one job per user).

    Args:
        job_ids: Slurm job ids (Parsl's block job ids)
        squeue: The ``squeue`` command
    Returns:
        ``(job_id, state, reason)`` of each pending job, e.g. ``('12', 'PENDING', 'Resources')``; jobs that
        run, ended or are unknown are left out
    Raises:
        RuntimeError: if ``squeue`` fails for another reason than unknown job ids
    """
    ids = [str(j) for j in job_ids if str(j).strip()]
    if not ids:
        return []
    proc = subprocess.run([squeue, '--noheader', '--states=PENDING', f'--jobs={",".join(ids)}',
                           '--format=%i|%T|%r'], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and 'Invalid job id' not in proc.stderr:
        raise RuntimeError(f'{squeue} failed: {proc.stderr.strip()}')
    pending = []
    for line in proc.stdout.splitlines():
        parts = line.strip().split('|')
        if len(parts) == 3:
            pending.append((parts[0], parts[1], parts[2]))
    return pending


def gpus_per_ml_job(ml_workers: int, gpus_per_node: int, source: str) -> int:
    """GPUs an ML job asks for: one per ML worker, none if the node's GPUs (the config's ``ML_GPUS``) are 0

    Raises:
        ValueError: more ML workers than GPUs on an ML node
    """
    if not gpus_per_node:
        return 0
    if ml_workers > gpus_per_node:
        raise ValueError(f'{source}: {ml_workers} ML workers but ML_GPUS={gpus_per_node} GPUs on an ML node '
                         f'(one GPU per ML worker)')
    return ml_workers


def slurm_diagnosis(run_dir: Path, job_ids: Sequence[str]) -> List[str]:
    """Why a Slurm configuration's workers have not started: pending jobs with Slurm's reason, job failure lines

    The ``diagnose(run_dir, job_ids)`` of the Slurm configurations: run.py prints these lines when an executor
    returns no result for a while (``--pending-warning``).
    """
    lines = [f'job {job_id} is {state} ({reason})' + (
        ': the job cannot run beside the other one (set EXCLUSIVE = False, or use a partition with more nodes)'
        if reason == 'Resources' else '') for job_id, state, reason in pending_jobs(job_ids)]
    return lines + startup_errors(run_dir)


# ---------------------------------------------------------------------- nodes of an allocation
def slurm_allocation_nodes(environ: Optional[Dict[str, str]] = None) -> List[str]:
    """Host names of the Slurm allocation this process runs in (``SLURM_JOB_NODELIST``, expanded)

    Expanded by ``scontrol show hostnames``, or by :func:`expand_hostlist` where that is missing or fails

    Raises:
        ValueError: outside a Slurm job
    """
    environ = os.environ if environ is None else environ
    nodelist = environ.get('SLURM_JOB_NODELIST') or environ.get('SLURM_NODELIST')
    if not nodelist:
        raise ValueError('not inside a Slurm allocation (no SLURM_JOB_NODELIST): start run.py in a batch job, '
                         'e.g. "sbatch docs/slurm_allocation.sbatch", or in "salloc"')
    if shutil.which('scontrol') is not None:
        proc = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True, text=True, timeout=30)
        if proc.returncode == 0 and proc.stdout.split():
            return proc.stdout.split()
        logger.warning(f'"scontrol show hostnames {nodelist}" failed ({proc.stderr.strip()[-200:]}); '
                       f'expanding the host list here')
    return expand_hostlist(nodelist)


def expand_hostlist(nodelist: str) -> List[str]:
    """Expand a Slurm host list such as ``c[01-03,7],gpu1`` (for machines without ``scontrol``)"""
    parts, depth, current = [], 0, ''
    for char in nodelist:
        depth += {'[': 1, ']': -1}.get(char, 0)
        if char == ',' and depth == 0:
            parts.append(current)
            current = ''
        else:
            current += char
    parts.append(current)
    names = []
    for part in filter(None, (p.strip() for p in parts)):
        match = re.match(r'^(.*?)\[([^\]]+)\](.*)$', part)
        if not match:
            names.append(part)
            continue
        prefix, ranges, suffix = match.groups()
        for item in ranges.split(','):
            first, _, last = item.partition('-')
            width = len(first)
            for i in range(int(first), int(last or first) + 1):
                names.extend(expand_hostlist(f'{prefix}{i:0{width}d}{suffix}'))
    return names


def pbs_allocation_nodes(environ: Optional[Dict[str, str]] = None) -> List[str]:
    """Host names of the PBS job this process runs in (``PBS_NODEFILE``, once each, in order)

    Raises:
        ValueError: outside a PBS job
    """
    environ = os.environ if environ is None else environ
    nodefile = environ.get('PBS_NODEFILE')
    if not nodefile or not Path(nodefile).is_file():
        raise ValueError('not inside a PBS job (no PBS_NODEFILE): start run.py in a batch job, '
                         'e.g. "qsub docs/polaris_allocation.pbs"')
    names = [line.strip() for line in Path(nodefile).read_text().splitlines() if line.strip()]
    return list(dict.fromkeys(names))


def split_nodes(nodes: Sequence[str], ml_nodes: int = 1) -> Tuple[List[str], List[str]]:
    """Split an allocation: QC on all nodes but the last ``ml_nodes``, ML on those

    With fewer nodes than ``ml_nodes + 1``, QC and ML share the nodes.

    Returns:
        (QC nodes, ML nodes)
    """
    nodes = list(nodes)
    if not nodes:
        raise ValueError('the allocation has no nodes')
    if len(nodes) <= ml_nodes:
        logger.warning(f'{len(nodes)} node(s) for {ml_nodes} ML node(s) and QC: QC and ML share them')
        return nodes, nodes[-ml_nodes:]
    return nodes[:-ml_nodes], nodes[-ml_nodes:]


class StepLauncher(Launcher):
    """Starts one worker manager per node of a fixed node list with a launcher command (``srun``, ``mpiexec``)

    Unlike Parsl's SrunLauncher (which writes its command to ``cmd_$SLURM_JOB_NAME.sh``, the same file for two
    executors in one allocation), the manager command is passed on the command line.

    Args:
        template: Launch command with ``{nodes}`` (count), ``{nodelist}`` (comma-separated) placeholders,
            e.g. ``'srun --nodes={nodes} --ntasks={nodes} --nodelist={nodelist}'``
        nodelist: Nodes to start a manager on
    """

    def __init__(self, template: str, nodelist: Sequence[str], debug: bool = True):
        super().__init__(debug=debug)
        self.template = template
        self.nodelist = list(nodelist)

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int, script_dir: str = '') -> str:
        prefix = self.template.format(nodes=len(self.nodelist), nodelist=','.join(self.nodelist))
        return f'{prefix} {command}'
