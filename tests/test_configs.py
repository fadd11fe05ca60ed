"""Parsl configurations in config/: each builds without a scheduler, has executors ``qc`` and ``ml``,
and the task server routes QC methods to ``qc`` and ML methods to ``ml``.

Nothing here submits a job or starts Parsl: fake ``sbatch``/``qsub`` (and friends) on ``PATH`` record any call.
The allocation configurations read their nodes from a fake ``SLURM_JOB_NODELIST`` and ``PBS_NODEFILE``
(:func:`allocation_env`); tests/slurm runs them on a real Slurm. PBS cannot run here: the PBS configurations
are checked as built, not run.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from colmena.queue import PipeQueues
from parsl.executors import HighThroughputExecutor
from parsl.launchers import MpiExecLauncher, SimpleLauncher, SrunLauncher
from parsl.providers import LocalProvider, PBSProProvider, SlurmProvider

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from moldesign.steer.campaign import ml_methods, qc_methods  # noqa: E402
from moldesign.steer.checks import default_qc_workers, load_config_module  # noqa: E402
from moldesign.steer.queues import TOPICS  # noqa: E402
from moldesign.steer.server import make_task_server  # noqa: E402

from config._common import (ACTIVATION_FAILED, StepLauncher, expand_hostlist, is_loopback,  # noqa: E402
                            worker_init)

CONFIG_NAMES = sorted(p.stem for p in (REPO / 'config').glob('*.py') if not p.stem.startswith('_'))
ALLOCATION = ('slurm_allocation', 'polaris_allocation')
SITE_ADDRESS = '192.0.2.10'
"""A routable address given as ADDRESS, so that the cluster configurations build on any machine (this host's
name may resolve to loopback, which they refuse)"""
CLUSTER = {  # name -> (provider type, launcher type of qc, launcher type of ml)
    'polaris': (PBSProProvider, MpiExecLauncher, SimpleLauncher),
    'slurm': (SlurmProvider, SrunLauncher, SimpleLauncher),
}
SCHEDULER_COMMANDS = ('sbatch', 'squeue', 'scancel', 'srun', 'qsub', 'qstat', 'qdel', 'mpiexec')
OMP_EXPORT = re.compile(r'\bexport\b[^;\n]*\bOMP_NUM_THREADS=(\d+)')


@pytest.fixture(autouse=True)
def allocation_env(tmp_path, monkeypatch):
    """As inside a 3-node allocation: SLURM_JOB_NODELIST (8 CPUs per node) and a PBS_NODEFILE (one line per rank)"""
    nodefile = tmp_path / 'PBS_NODEFILE'
    nodefile.write_text('x3000c0s1b0n0\nx3000c0s1b0n0\nx3000c0s7b1n0\nx3000c0s13b0n0\n')
    monkeypatch.setenv('SLURM_JOB_NODELIST', 'c[01-03]')
    monkeypatch.setenv('SLURM_CPUS_ON_NODE', '8')
    monkeypatch.setenv('PBS_NODEFILE', str(nodefile))
    return nodefile


def load(name: str):
    """A configuration module, with ADDRESS set where it has one (as a site's copy would)"""
    module = load_config_module(name)
    if hasattr(module, 'ADDRESS'):
        module.ADDRESS = SITE_ADDRESS
    return module


@pytest.fixture
def fake_scheduler(tmp_path, monkeypatch):
    """Put scheduler commands on PATH that only record that they were called; returns the record file"""
    bindir = tmp_path / 'fakebin'
    bindir.mkdir()
    record = tmp_path / 'scheduler_calls.txt'
    for name in SCHEDULER_COMMANDS:
        script = bindir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{record}"\nexit 1\n')
        script.chmod(0o755)
    monkeypatch.setenv('PATH', f'{bindir}{os.pathsep}{os.environ.get("PATH", "")}')
    return record


def _build(name: str, run_dir: Path, qc_workers: int = None):
    module = load(name)
    if qc_workers is None:
        qc_workers = module.default_qc_workers() if hasattr(module, 'default_qc_workers') else 1
    return module, module.make_config(run_dir, qc_workers, 1)


def _omp_threads(executor: HighThroughputExecutor) -> int:
    match = OMP_EXPORT.search(executor.provider.worker_init)
    assert match, f'{executor.label}: worker_init does not export OMP_NUM_THREADS: {executor.provider.worker_init!r}'
    return int(match.group(1))


def test_known_configs_present():
    assert {'local', 'polaris', 'slurm', 'slurm_allocation', 'polaris_allocation'} <= set(CONFIG_NAMES)


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_config_builds_without_submitting(name, tmp_path, fake_scheduler):
    module, config = _build(name, tmp_path / 'run')

    assert sorted(e.label for e in config.executors) == ['ml', 'qc']
    assert all(isinstance(e, HighThroughputExecutor) for e in config.executors)
    assert Path(config.run_dir) == tmp_path / 'run' / 'parsl'
    assert config.retries >= 1
    for executor in config.executors:
        assert _omp_threads(executor) >= 1
    if hasattr(module, 'default_qc_workers'):
        assert isinstance(module.default_qc_workers(), int) and module.default_qc_workers() >= 1
        assert default_qc_workers(module) == module.default_qc_workers()
    assert 'HighThroughputExecutor' in repr(config)  # run.py writes repr(config) to parsl_config.txt

    # Nothing was submitted: no scheduler command ran, no job is known to any provider
    assert not fake_scheduler.exists(), fake_scheduler.read_text()
    assert all(not e.provider.resources for e in config.executors)
    assert not (tmp_path / 'run').exists()  # Parsl creates run_dir only when loaded


@pytest.mark.parametrize('name', sorted(CLUSTER))
def test_cluster_config_providers_and_encryption(name, tmp_path):
    module, config = _build(name, tmp_path)
    provider_type, qc_launcher, ml_launcher = CLUSTER[name]
    executors = {e.label: e for e in config.executors}

    for executor in executors.values():
        assert executor.encrypted is True
        assert isinstance(executor.provider, provider_type)
        assert module.ENV_ACTIVATION in executor.provider.worker_init
        assert executor.provider.walltime == module.WALLTIME
        assert executor.provider.max_blocks == 1  # Never a second job per executor
    assert isinstance(executors['qc'].provider.launcher, qc_launcher)
    assert isinstance(executors['ml'].provider.launcher, ml_launcher)
    assert executors['qc'].provider.nodes_per_block == module.NODES
    assert executors['ml'].provider.nodes_per_block == 1

    # Workers per node follow the editable constants; OMP_NUM_THREADS is the QC threads per worker
    assert executors['qc'].workers_per_node == module.CORES_PER_NODE // module.QC_THREADS_PER_WORKER
    assert _omp_threads(executors['qc']) == module.QC_THREADS_PER_WORKER
    assert module.default_qc_workers() == module.NODES * executors['qc'].workers_per_node


@pytest.mark.parametrize('name', sorted(CLUSTER))
def test_cluster_constants_take_effect(name, tmp_path, monkeypatch):
    module = load(name)
    monkeypatch.setattr(module, 'NODES', 3)
    monkeypatch.setattr(module, 'QC_THREADS_PER_WORKER', 8)
    monkeypatch.setattr(module, 'WALLTIME', '02:30:00')
    config = module.make_config(tmp_path, module.default_qc_workers(), ml_workers=2)
    executors = {e.label: e for e in config.executors}

    assert module.default_qc_workers() == 3 * (module.CORES_PER_NODE // 8)
    assert executors['qc'].provider.nodes_per_block == 3
    assert executors['qc'].workers_per_node == module.CORES_PER_NODE // 8
    assert _omp_threads(executors['qc']) == 8
    assert executors['ml'].workers_per_node == 2
    assert _omp_threads(executors['ml']) == module.CORES_PER_NODE // 2
    assert all(e.provider.walltime == '02:30:00' for e in config.executors)


@pytest.mark.parametrize('threads', [1, 3, 4, 8, 32])
def test_polaris_qc_workers_pinned_to_disjoint_cores(threads, tmp_path, monkeypatch):
    module = load('polaris')
    monkeypatch.setattr(module, 'QC_THREADS_PER_WORKER', threads)
    qc = {e.label: e for e in module.make_config(tmp_path, 4).executors}['qc']

    kind, *workers = qc.cpu_affinity.split(':')
    assert kind == 'list' and len(workers) == qc.workers_per_node == 32 // threads
    cores = []
    for spec in workers:
        first, _, last = spec.partition('-')
        mine = list(range(int(first), int(last or first) + 1))
        assert len(mine) == threads  # As many physical cores as OpenMP threads
        cores += mine
    assert len(set(cores)) == len(cores) and max(cores) < module.CORES_PER_NODE  # Disjoint, no hyperthreads
    # Parsl's worker sizes its pool from hardware threads: it must not start fewer workers than the list has
    assert module.HW_THREADS_PER_NODE // qc.cores_per_worker >= len(workers)


def test_bad_arguments_and_interface_give_clear_errors(tmp_path, monkeypatch):
    for name in sorted(CLUSTER) + list(ALLOCATION):
        module = load(name)
        with pytest.raises(ValueError, match='at least one QC'):
            module.make_config(tmp_path, 0)
    slurm = load_config_module('slurm')
    monkeypatch.setattr(slurm, 'INTERFACE', 'nosuchif0')
    with pytest.raises(ValueError, match="no network interface 'nosuchif0'"):
        slurm.make_config(tmp_path, 1)
    # Polaris falls back to the host name off Polaris (no bond0 here); that may be a loopback address
    polaris = load_config_module('polaris')
    monkeypatch.setattr(polaris, 'INTERFACE', 'nosuchif0')
    try:
        assert all(e.address for e in polaris.make_config(tmp_path, 1).executors)
    except ValueError as exc:
        assert 'loopback' in str(exc)
    # With ADDRESS it builds anywhere
    monkeypatch.setattr(polaris, 'ADDRESS', SITE_ADDRESS)
    assert {e.address for e in polaris.make_config(tmp_path, 1).executors} == {SITE_ADDRESS}


@pytest.mark.parametrize('name', sorted(CLUSTER) + list(ALLOCATION))
def test_loopback_worker_address_refused_unless_given(name, tmp_path, monkeypatch):
    """Workers on other nodes cannot reach 127.x: make_config says which constant to set (INTERFACE='lo' gives
    127.0.0.1 here, as Debian's 127.0.1.1 host-name line would); ADDRESS='127.0.0.1' is allowed on purpose"""
    module = load_config_module(name)
    monkeypatch.setattr(module, 'INTERFACE', 'lo')
    with pytest.raises(ValueError, match=r'127\.0\.0\.1, a loopback address.*Set INTERFACE.*or ADDRESS'):
        module.make_config(tmp_path, 1)
    monkeypatch.setattr(module, 'ADDRESS', '127.0.0.1')
    assert {e.address for e in module.make_config(tmp_path, 1).executors} == {'127.0.0.1'}


def test_is_loopback():
    assert is_loopback('127.0.0.1') and is_loopback('127.0.1.1') and is_loopback('localhost') and is_loopback('::1')
    assert not is_loopback('192.0.2.10') and not is_loopback('10.140.57.12')


@pytest.mark.parametrize('exclusive', [True, False])
def test_slurm_exclusive_is_a_constant(exclusive, tmp_path, monkeypatch):
    module = load('slurm')
    monkeypatch.setattr(module, 'EXCLUSIVE', exclusive)
    for executor in module.make_config(tmp_path, 1).executors:
        assert executor.provider.exclusive is exclusive
        assert ('#SBATCH --exclusive' in executor.provider.scheduler_options) is exclusive


@pytest.mark.parametrize('name', sorted(CLUSTER))
@pytest.mark.parametrize('ml_workers', [1, 2, 4])
def test_ml_job_asks_for_one_gpu_per_ml_worker(name, ml_workers, tmp_path, monkeypatch):
    module = load(name)
    monkeypatch.setattr(module, 'ML_GPUS', 4)
    ml = {e.label: e for e in module.make_config(tmp_path, 1, ml_workers).executors}['ml']
    assert ml.available_accelerators == [str(i) for i in range(ml_workers)]
    if name == 'polaris':
        assert ml.provider.select_options == f'ngpus={ml_workers}'
    else:
        assert ml.provider.gpus_per_node == ml_workers
    with pytest.raises(ValueError, match='one GPU per ML worker'):
        module.make_config(tmp_path, 1, 5)
    monkeypatch.setattr(module, 'ML_GPUS', 0)  # TensorFlow on the CPU: no GPU requested
    ml = {e.label: e for e in module.make_config(tmp_path, 1, ml_workers).executors}['ml']
    assert not ml.available_accelerators
    assert not (ml.provider.select_options if name == 'polaris' else ml.provider.gpus_per_node)


# ---------------------------------------------------------------------- the worker start-up lines
def _run_worker_init(tmp_path, activation: str, path: str) -> subprocess.CompletedProcess:
    script = tmp_path / 'job.sh'
    script.write_text(worker_init(activation, 'slurm', 2) + 'echo "OMP=$OMP_NUM_THREADS"\n')
    return subprocess.run(['bash', str(script)], capture_output=True, text=True, timeout=30,
                          env={'PATH': path, 'HOME': str(tmp_path)})


def test_worker_init_stops_when_activation_fails(tmp_path):
    """The job script's start-up in bash: a failing ENV_ACTIVATION (of any command in a ';' chain's end) or one that
    leaves process_worker_pool.py off PATH ends the job with one 'moldesign:' line; a good one goes on"""
    venv_bin = os.path.dirname(sys.executable)
    failed = _run_worker_init(tmp_path, 'module load anaconda3; conda activate moldesign', '/usr/bin:/bin')
    assert failed.returncode == ACTIVATION_FAILED
    assert failed.stderr.splitlines()[-1] == ('moldesign: ENV_ACTIVATION of slurm failed with exit status 127: '
                                              'module load anaconda3; conda activate moldesign')
    assert 'OMP=' not in failed.stdout

    no_parsl = _run_worker_init(tmp_path, 'true', '/usr/bin:/bin')
    assert no_parsl.returncode == ACTIVATION_FAILED
    assert 'process_worker_pool.py (Parsl) is not on PATH after ENV_ACTIVATION of slurm' in no_parsl.stderr

    good = _run_worker_init(tmp_path, f'export PATH={venv_bin}:$PATH', '/usr/bin:/bin')
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == 'OMP=2'
    assert f'workers start from {venv_bin}/process_worker_pool.py' in good.stderr


@pytest.mark.parametrize('name', sorted(CLUSTER))
def test_job_scripts_check_activation_and_keep_the_environment_in_srun(name, tmp_path):
    module, config = _build(name, tmp_path)
    for executor in config.executors:
        init = executor.provider.worker_init
        assert init.endswith('\n')  # Parsl appends its own exports after it
        assert module.ENV_ACTIVATION in init and f'exit {ACTIVATION_FAILED}' in init
        assert 'command -v process_worker_pool.py' in init
        if name == 'slurm':  # SBATCH_EXPORT=NONE sites: srun steps inherit the job's environment
            assert 'export SLURM_EXPORT_ENV=ALL' in init


# ---------------------------------------------------------------------- one allocation split between executors
def _launch_lines(config) -> dict:
    """The command each executor's provider would run to start its managers"""
    return {e.label: e.provider.launcher('process_worker_pool.py --block_id=0', 1, 1) for e in config.executors}


def test_slurm_allocation_splits_the_nodes(tmp_path):
    module, config = _build('slurm_allocation', tmp_path / 'run')
    executors = {e.label: e for e in config.executors}
    assert all(isinstance(e.provider, LocalProvider) for e in config.executors)  # Job steps, never new jobs
    assert all(isinstance(e.provider.launcher, StepLauncher) for e in config.executors)
    assert module.allocation() == (['c01', 'c02'], ['c03'])
    assert module.default_qc_workers() == 2 * 8  # SLURM_CPUS_ON_NODE=8, one thread per QC worker
    lines = _launch_lines(config)
    assert lines['qc'].startswith('srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --nodelist=c01,c02 --cpus-per-task=8 '
                                  '--overlap --export=ALL --job-name=qc-workers process_worker_pool.py')
    assert lines['ml'].startswith('srun --nodes=1 --ntasks=1 --ntasks-per-node=1 --nodelist=c03 --cpus-per-task=8 '
                                  '--overlap --export=ALL --job-name=ml-workers process_worker_pool.py')
    assert executors['qc'].workers_per_node == 8 and executors['ml'].workers_per_node == 1
    assert all('SLURM_EXPORT_ENV=ALL' in e.provider.worker_init for e in config.executors)


def test_slurm_allocation_one_node_and_outside(tmp_path, monkeypatch):
    module = load('slurm_allocation')
    monkeypatch.setenv('SLURM_JOB_NODELIST', 'gpu17')
    assert module.allocation() == (['gpu17'], ['gpu17'])  # QC and ML share the node
    monkeypatch.delenv('SLURM_JOB_NODELIST')
    with pytest.raises(ValueError, match='not inside a Slurm allocation'):
        module.make_config(tmp_path, 1)


def test_polaris_allocation_from_a_pbs_nodefile(tmp_path, allocation_env):
    """PBS is not available here: the node file is a fake one (one line per rank, as PBS writes it)"""
    module, config = _build('polaris_allocation', tmp_path / 'run')
    executors = {e.label: e for e in config.executors}
    assert module.allocation() == (['x3000c0s1b0n0', 'x3000c0s7b1n0'], ['x3000c0s13b0n0'])
    assert module.default_qc_workers() == 2 * (32 // module.QC_THREADS_PER_WORKER)
    lines = _launch_lines(config)
    assert lines['qc'].startswith('mpiexec -n 2 --ppn 1 --hosts x3000c0s1b0n0,x3000c0s7b1n0 --depth=64 '
                                  '--cpu-bind depth process_worker_pool.py')
    assert lines['ml'].startswith('mpiexec -n 1 --ppn 1 --hosts x3000c0s13b0n0 --depth=64 --cpu-bind depth '
                                  'process_worker_pool.py')
    assert all(isinstance(e.provider, LocalProvider) for e in config.executors)
    assert executors['ml'].available_accelerators == ['0']  # One ML worker, one GPU
    assert _omp_threads(executors['qc']) == module.QC_THREADS_PER_WORKER
    allocation_env.unlink()
    with pytest.raises(ValueError, match='not inside a PBS job'):
        module.make_config(tmp_path, 1)


def test_expand_hostlist():
    assert expand_hostlist('c[01-03,7],gpu1') == ['c01', 'c02', 'c03', 'c7', 'gpu1']
    assert expand_hostlist('nid[001234-001235]') == ['nid001234', 'nid001235']
    assert expand_hostlist('n1') == ['n1']


def test_batch_scripts_are_valid_bash():
    for name in ('slurm_allocation.sbatch', 'polaris_allocation.pbs'):
        path = REPO / 'docs' / name
        assert subprocess.run(['bash', '-n', str(path)], capture_output=True).returncode == 0, name
        text = path.read_text()
        assert 'run.py --config "$CONFIG"' in text and '\nENV_ACTIVATION=' in text


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_task_server_routes_methods_to_executors(name, tmp_path):
    _, config = _build(name, tmp_path)
    queues = PipeQueues(topics=list(TOPICS))
    server = make_task_server(queues, config, qc_methods(), ml_methods())  # Not started: no Parsl, no process
    routes = {method: list(app.executors) for method, (app, _) in server.methods_.items()}

    qc = {'compute_reference_energy', 'compute_atomization_energy', 'compute_atomization_energies'}
    ml = {'generate_molecules', 'rank_candidates', 'warm_up'}
    assert set(routes) == qc | ml
    for method in qc:
        assert routes[method] == ['qc'], method
    for method in ml:
        assert routes[method] == ['ml'], method
    assert server.pid is None


# ---------------------------------------------------------------------- a Slurm job on a fake scheduler
FAKE_SLURM = {
    # sbatch: run the job script in the background, in its own session, as Slurm would on the first node
    'sbatch': r'''#!/bin/bash
dir="$FAKE_SLURM_DIR"; id=$(( $(cat "$dir/next" 2>/dev/null || echo 100) + 1 )); echo $id > "$dir/next"
name=$(sed -n 's/^#SBATCH --job-name=//p' "$1")
SLURM_JOB_ID=$id SLURM_JOB_NAME=$name SLURM_CPUS_ON_NODE=$(nproc) SLURM_JOB_NUM_NODES=1 \
  setsid bash "$1" > "$dir/job-$id.out" 2>&1 < /dev/null &
echo $! > "$dir/job-$id.pid"
echo "Submitted batch job $id"
''',
    'sacct': '#!/bin/sh\nexit 1\n',  # "accounting disabled": Parsl falls back to squeue
    'squeue': r'''#!/bin/bash
for id in $(echo "$@" | sed -n "s/.*--job '\{0,1\}\([0-9,]*\).*/\1/p" | tr , ' '); do
  pid=$(cat "$FAKE_SLURM_DIR/job-$id.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && echo "$id R"
done
exit 0
''',
    'scancel': r'''#!/bin/bash
for id in "$@"; do pid=$(cat "$FAKE_SLURM_DIR/job-$id.pid" 2>/dev/null) && kill -- -"$pid" 2>/dev/null; done
exit 0
''',
    # srun: start --ntasks copies of the command and record the options it was given
    'srun': r'''#!/bin/bash
echo "srun $*" >> "$FAKE_SLURM_DIR/srun.log"; n=1; args=()
while [ $# -gt 0 ]; do case "$1" in --ntasks) n=$2; shift 2;; -*) shift;; *) args+=("$@"); break;; esac; done
for i in $(seq "$n"); do "${args[@]}" & done; wait
''',
}

WORKER_PROBE = '''
import json, os, sys
import parsl
from parsl import python_app
sys.path.insert(0, sys.argv[1])
from moldesign.steer.checks import load_config_module
module = load_config_module(sys.argv[3])
SETUP
config = module.make_config(sys.argv[2], module.default_qc_workers())

def probe():
    import os
    return {'omp': os.environ.get('OMP_NUM_THREADS'), 'rank': os.environ.get('PARSL_WORKER_RANK'),
            'nice': os.nice(0)}

parsl.load(config)
try:
    out = {label: python_app(probe, executors=[label])().result(timeout=120) for label in ('qc', 'ml')}
    out['qc_workers'] = module.default_qc_workers()
    print('RESULT ' + json.dumps(out))
finally:
    parsl.dfk().cleanup()
'''
"""Runs one task on each executor of a configuration (argv: repository, run directory, config name; SETUP:
lines that adjust the config module) and prints what the workers saw"""


def _probe_workers(tmp_path: Path, config_name: str, setup: str, env: dict):
    """Run :data:`WORKER_PROBE` in a subprocess; returns the finished process"""
    import subprocess
    script = tmp_path / 'probe.py'
    script.write_text(WORKER_PROBE.replace('SETUP', setup))
    return subprocess.run([sys.executable, str(script), str(REPO), str(tmp_path / 'run'), config_name], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)


def _probe_output(proc) -> dict:
    import json
    return json.loads(proc.stdout.split('RESULT ', 1)[1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_slurm_config_runs_tasks_on_fake_slurm(tmp_path):
    """The Slurm job script, srun launch line and worker_init give workers with the configured threads"""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    for name, text in FAKE_SLURM.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    env = dict(os.environ, FAKE_SLURM_DIR=str(tmp_path),
               PATH=f'{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get("PATH", "")}')
    setup = ("module.ENV_ACTIVATION = 'export PATH=' + os.path.dirname(sys.executable) + ':$PATH'\n"
             "module.ADDRESS = '127.0.0.1'\n"
             "module.PARTITION, module.CORES_PER_NODE, module.QC_THREADS_PER_WORKER = 'debug', 2, 2")
    proc = _probe_workers(tmp_path, 'slurm', setup, env)
    jobs = '\n'.join(p.read_text()[-2000:] for p in tmp_path.glob('job-*.out'))
    assert proc.returncode == 0, proc.stderr[-3000:] + jobs
    result = _probe_output(proc)
    assert result['qc']['omp'] == '2'  # QC_THREADS_PER_WORKER reached the task
    assert result['ml']['omp'] == '2'  # CORES_PER_NODE // ml_workers
    assert result['qc_workers'] == 1
    srun = (tmp_path / 'srun.log').read_text()
    assert '--ntasks-per-node=1' in srun and '--cpus-per-task=2' in srun  # the QC job used srun, once per node
    assert len(srun.splitlines()) == 1  # the ML job (SimpleLauncher) did not
    assert (tmp_path / 'run' / 'parsl' / '000' / 'submit_scripts').is_dir()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_local_workers_single_threaded_and_ml_yields_to_qc(tmp_path):
    """Local workers run one thread each; the ML worker runs at a lower priority than the QC worker"""
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
    proc = _probe_workers(tmp_path, 'local', '', env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = _probe_output(proc)
    assert out['qc']['omp'] == out['ml']['omp'] == '1'
    assert out['ml']['nice'] >= out['qc']['nice'] + 10


def test_run_py_reports_a_config_error_in_one_line(tmp_path):
    copy = tmp_path / 'my_cluster.py'
    copy.write_text(re.sub(r'^INTERFACE\b.*$', "INTERFACE = 'lo'", (REPO / 'config' / 'slurm.py').read_text(),
                           count=1, flags=re.MULTILINE))
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
    proc = subprocess.run([sys.executable, str(REPO / 'run.py'), '--config', str(copy), '--out-dir',
                           str(tmp_path / 'runs'), '--quiet'], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if 'error' in line]
    assert len(errors) == 1 and 'loopback' in errors[0] and 'INTERFACE' in errors[0], proc.stderr
    assert not (tmp_path / 'runs').exists()
