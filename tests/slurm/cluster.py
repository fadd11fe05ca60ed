"""A real Slurm cluster of emulated nodes on this one machine, for the tests.

Uses Debian's packages (``slurmctld``, ``slurmd``, ``slurm-client``, ``munge``) and no systemd: it writes
``slurm.conf`` into a state folder, starts its own ``munged`` (own key and socket in that folder), one
``slurmctld`` and one ``slurmd -N nK`` per emulated node, waits until ``sinfo`` shows every node idle, and
stops them by the PIDs it recorded. Nothing outside the state folder is written; the clients (``sbatch``,
``squeue``, ...) find the cluster through ``SLURM_CONF`` (see :meth:`SlurmCluster.env`).

All nodes share this host's name and address (``NodeAddr=127.0.0.1``, one ``slurmd`` port each); Slurm
tells them apart in a job by ``SLURMD_NODENAME``. Needs root (the daemons and jobs run as root).

    python tests/slurm/cluster.py start --nodes 3 --state /tmp/slurm   # prints the export line for SLURM_CONF
    SLURM_CONF=/tmp/slurm/slurm.conf sinfo -N
    python tests/slurm/cluster.py stop --state /tmp/slurm
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

logger = logging.getLogger(__name__)

PACKAGES = ('slurmctld', 'slurmd', 'slurm-client', 'munge')
"""Debian packages that provide the daemons and clients"""
PROGRAMS = ('slurmctld', 'slurmd', 'sbatch', 'squeue', 'scancel', 'sinfo', 'scontrol', 'srun', 'munged', 'mungekey')
"""Programs the cluster needs on PATH (Debian puts the daemons in /usr/sbin)"""
PARTITIONS = {'debug': 'ALL', 'single': 'n1'}
"""Partitions: ``debug`` (default) has every node, ``single`` only ``n1`` (a one-node cluster for tests)"""
SBIN_DIRS = ('/usr/sbin', '/sbin')


def _which(program: str, search_path: Optional[str] = None) -> Optional[str]:
    path = (os.environ.get('PATH', '') if search_path is None else search_path) + os.pathsep \
        + os.pathsep.join(SBIN_DIRS)
    return shutil.which(program, path=path)


def missing_requirements(euid: Optional[int] = None, search_path: Optional[str] = None,
                         sbin_dirs: Sequence[str] = SBIN_DIRS) -> Optional[str]:
    """Why this machine cannot run the cluster, or None if it can

    Args:
        euid: User id to judge (default: this process's)
        search_path: PATH to look for the programs in (default: this process's), besides ``sbin_dirs``
        sbin_dirs: Folders of the daemons
    Returns:
        A one-line reason (not root, programs missing), or None
    """
    if sys.platform != 'linux':
        return f'emulated Slurm needs Linux (this is {sys.platform})'
    if (os.geteuid() if euid is None else euid) != 0:
        return 'emulated Slurm needs root (slurmd runs jobs as their user; make system-deps installs it as root)'
    path = os.pathsep.join([os.environ.get('PATH', '') if search_path is None else search_path, *sbin_dirs])
    missing = [p for p in PROGRAMS if shutil.which(p, path=path) is None]
    if missing:
        return (f'Slurm/munge programs not installed: {", ".join(missing)} '
                f'(apt-get install {" ".join(PACKAGES)}, or run "make system-deps" as root)')
    return None


def free_ports(n: int) -> List[int]:
    """``n`` distinct TCP ports free on the loopback interface right now"""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(('127.0.0.1', 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class SlurmCluster:
    """A Slurm controller and ``nodes`` emulated compute nodes on this host

    Args:
        state: Folder for slurm.conf, the munge key and socket, spool, logs and PID files
        nodes: Number of emulated nodes, named n1, n2, ...
        cpus_per_node: CPUs each node declares (may exceed the host's: ``SlurmdParameters=config_overrides``)
        memory_per_node_mb: Memory each node declares
    """
    state: Path
    nodes: int = 3
    cpus_per_node: int = 2
    memory_per_node_mb: int = 4000
    _pids: Dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.state = Path(self.state).resolve()

    # ------------------------------------------------------------------ paths and environment
    @property
    def conf(self) -> Path:
        return self.state / 'slurm.conf'

    @property
    def node_names(self) -> List[str]:
        return [f'n{i}' for i in range(1, self.nodes + 1)]

    @property
    def munge_socket(self) -> Path:
        return self.state / 'munge' / 'munge.socket'

    def env(self, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """Environment in which the Slurm clients talk to this cluster"""
        env = dict(os.environ if base is None else base)
        env['SLURM_CONF'] = str(self.conf)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client command (``sinfo``, ``squeue``, ...) against this cluster"""
        return subprocess.run(list(args), env=self.env(), capture_output=True, text=True, check=check,
                              timeout=timeout)

    # ------------------------------------------------------------------ configuration
    def write_config(self) -> None:
        """Write slurm.conf and a fresh munge key into the state folder"""
        for sub in ('munge', 'ctld', 'spool', 'log'):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        (self.state / 'munge').chmod(0o755)  # munged wants a socket folder everyone can traverse
        key = self.state / 'munge' / 'munge.key'
        if not key.exists():
            subprocess.run([_which('mungekey'), '--create', '--keyfile', str(key)], check=True,
                           capture_output=True)
            key.chmod(0o600)
        ctld_port, *node_ports = free_ports(1 + self.nodes)
        host = socket.gethostname().split('.')[0]
        s = self.state
        lines = [
            '# Written by tests/slurm/cluster.py: emulated nodes on one host, root daemons, no cgroups',
            'ClusterName=moldesign-test',
            f'SlurmctldHost={host}(127.0.0.1)',
            f'SlurmctldPort={ctld_port}',
            'SlurmUser=root', 'SlurmdUser=root',
            'AuthType=auth/munge', 'CredType=cred/munge',
            f'AuthInfo=socket={self.munge_socket}',
            'MailProg=/bin/true',
            'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none',
            'SelectType=select/cons_tres', 'SelectTypeParameters=CR_Core',
            'AccountingStorageType=accounting_storage/none', 'JobAcctGatherType=jobacct_gather/none',
            'JobCompType=jobcomp/none', 'MpiDefault=none', 'SwitchType=switch/none',
            'ReturnToService=2', 'SlurmdParameters=config_overrides',
            # Short timers: cancelled jobs go within seconds, finished ones leave squeue quickly
            'KillWait=5', 'MinJobAge=30', 'SlurmdTimeout=60', 'InactiveLimit=0', 'MessageTimeout=10',
            f'StateSaveLocation={s}/ctld',
            f'SlurmdSpoolDir={s}/spool/%n',
            f'SlurmctldPidFile={s}/slurmctld.pid',
            f'SlurmdPidFile={s}/slurmd-%n.pid',
            f'SlurmctldLogFile={s}/log/slurmctld.log',
            f'SlurmdLogFile={s}/log/slurmd-%n.log',
            'SlurmctldDebug=info', 'SlurmdDebug=info',
        ]
        for name, port in zip(self.node_names, node_ports):
            lines.append(f'NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} '
                         f'CPUs={self.cpus_per_node} RealMemory={self.memory_per_node_mb} State=UNKNOWN')
        for i, (name, nodes) in enumerate(PARTITIONS.items()):
            lines.append(f'PartitionName={name} Nodes={nodes} Default={"YES" if i == 0 else "NO"} '
                         'MaxTime=INFINITE State=UP')
        self.conf.write_text('\n'.join(lines) + '\n')

    # ------------------------------------------------------------------ daemons
    def _spawn(self, name: str, args: Sequence[str]) -> None:
        log = open(self.state / 'log' / f'{name}.out', 'ab')
        proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self.env(), start_new_session=True)  # Not killed by the caller's Ctrl-C
        log.close()
        self._pids[name] = proc.pid
        (self.state / 'pids.json').write_text(json.dumps(self._pids))
        logger.info(f'Started {name} (pid {proc.pid})')

    def start(self, timeout: float = 60) -> None:
        """Write the configuration, start munged, slurmctld and the slurmd's, wait until the nodes are idle

        Raises:
            RuntimeError: if a daemon exits or the nodes do not become idle within ``timeout`` (with its log)
        """
        reason = missing_requirements()
        if reason:
            raise RuntimeError(reason)
        start = time.monotonic()
        self.write_config()
        m = self.state / 'munge'
        self._spawn('munged', [_which('munged'), '--foreground', '--force', f'--socket={self.munge_socket}',
                               f'--key-file={m}/munge.key', f'--pid-file={m}/munged.pid',
                               f'--log-file={m}/munged.log', f'--seed-file={m}/munged.seed'])
        self._wait(lambda: self.munge_socket.exists(), 10, 'munged did not create its socket')
        self._spawn('slurmctld', [_which('slurmctld'), '-D', '-i', '-f', str(self.conf)])
        self._wait(lambda: self.run('scontrol', 'ping', check=False).stdout.count('is UP') > 0, 30,
                   'slurmctld does not answer "scontrol ping"')
        for name in self.node_names:
            self._spawn(f'slurmd-{name}', [_which('slurmd'), '-D', '-N', name, '-f', str(self.conf)])
        self._wait(self._all_idle, timeout, 'the nodes did not become idle')
        logger.info(f'Slurm with {self.nodes} nodes up in {time.monotonic() - start:.1f} s ({self.conf})')

    def _all_idle(self) -> bool:
        out = self.run('sinfo', '--noheader', '-N', '-o', '%N %t', check=False).stdout.split()
        states = dict(zip(out[::2], out[1::2]))
        return all(states.get(name) == 'idle' for name in self.node_names)

    def _wait(self, predicate, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [name for name, pid in self._pids.items() if not _alive(pid)]
            if dead:
                raise RuntimeError(f'{message}: {", ".join(dead)} exited\n{self.logs()}')
            try:
                if predicate():
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f'{message} within {timeout:.0f} s\n{self.logs()}')

    def logs(self, tail: int = 20) -> str:
        """The last lines of every daemon log (for error messages)"""
        out = []
        for path in sorted((self.state / 'log').glob('*')) + [self.state / 'munge' / 'munged.log']:
            if path.is_file():
                lines = path.read_text(errors='replace').splitlines()[-tail:]
                out.append(f'--- {path}\n' + '\n'.join(lines))
        return '\n'.join(out)

    def jobs(self) -> List[Dict[str, str]]:
        """Jobs in the queue: dicts with id, name, state, reason, nodes"""
        out = self.run('squeue', '--noheader', '-o', '%i|%j|%T|%r|%N', check=False).stdout
        keys = ('id', 'name', 'state', 'reason', 'nodes')
        return [dict(zip(keys, line.split('|'))) for line in out.splitlines() if line.strip()]

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job and wait until the queue is empty"""
        if not self.jobs():
            return
        self.run('scancel', '--full', '--user', 'root', check=False)
        deadline = time.monotonic() + timeout
        while self.jobs() and time.monotonic() < deadline:
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel the jobs, then stop the daemons this cluster started (by PID) and wait for them"""
        pids_file = self.state / 'pids.json'
        if not self._pids and pids_file.exists():
            self._pids = json.loads(pids_file.read_text())
        if not self._pids:
            return
        if _alive(self._pids.get('slurmctld', -1)):
            try:
                self.cancel_all()
            except (subprocess.SubprocessError, OSError) as exc:
                logger.warning(f'Could not cancel the jobs: {exc}')
        # The slurmd's first (their slurmstepd's end with their jobs), then the controller, then munge
        for group in ([p for n, p in self._pids.items() if n.startswith('slurmd-')],
                      [self._pids['slurmctld']] if 'slurmctld' in self._pids else [],
                      [self._pids['munged']] if 'munged' in self._pids else []):
            _terminate(group)
        self._pids.clear()
        pids_file.unlink(missing_ok=True)
        logger.info('Slurm stopped')


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie counts as gone; one of ours is reaped)"""
    try:
        with open(f'/proc/{pid}/stat') as fp:
            state = fp.read().rsplit(')', 1)[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    if state == 'Z':
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def _terminate(pids: Sequence[int], timeout: float = 10) -> None:
    """SIGTERM to every process, then SIGKILL to those still there after ``timeout`` seconds"""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [pid for pid in pids if _alive(pid)]
        if not pids:
            return


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('action', choices=('start', 'stop', 'status'))
    parser.add_argument('--nodes', type=int, default=3, help='Emulated nodes (start)')
    parser.add_argument('--cpus-per-node', type=int, default=2, help='CPUs each node declares (start)')
    parser.add_argument('--state', type=Path, required=True, help='State folder (slurm.conf, logs, PIDs)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    cluster = SlurmCluster(args.state, nodes=args.nodes, cpus_per_node=args.cpus_per_node)
    if args.action == 'start':
        try:
            cluster.start()
        except RuntimeError as exc:
            cluster.stop()
            print(f'error: {exc}', file=sys.stderr)
            return 1
        print(f'export SLURM_CONF={cluster.conf}')
    elif args.action == 'stop':
        cluster.stop()
    else:
        print(cluster.run('sinfo', '-N', check=False).stdout, end='')
    return 0


if __name__ == '__main__':
    sys.exit(main())
