"""environment.py: what a process sets before Paddle is imported."""
import os
import subprocess
import sys

from conftest import ROOT
from environment import launched_world, set_cpu_math_env


def test_math_threads_are_shared_by_the_processes_of_a_node():
    cores = len(os.sched_getaffinity(0))
    environ = {'PADDLE_LOCAL_SIZE': '2'}
    set_cpu_math_env(environ)
    assert environ['OMP_NUM_THREADS'] == str(max(1, cores // 2))
    environ = {'OMP_NUM_THREADS': '7'}
    set_cpu_math_env(environ)
    assert environ['OMP_NUM_THREADS'] == '7'  # a value already set wins


def test_launched_world_reads_the_launch_environment():
    assert launched_world({}) is None
    assert launched_world({'PADDLE_TRAINER_ID': '2', 'PADDLE_TRAINERS_NUM': '4'}) == (2, 4)


def test_environment_imports_only_the_standard_library():
    # what it sets is read when Paddle, NumPy or OpenMP load: importing it must load none of them
    code = ('import sys, environment; '
            'print(sorted(m for m in ("paddle", "numpy", "tqdm") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == '[]'


def test_setup_sets_the_threads_before_paddle_and_quiets_non_master_bars():
    code = ('import os, environment; environment.setup(); import sys; '
            'print(os.environ["OMP_NUM_THREADS"], os.environ.get("TQDM_DISABLE"), '
            '"paddle" in sys.modules)')
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'TQDM_DISABLE')}
    env.update(PADDLE_TRAINER_ID='1', PADDLE_TRAINERS_NUM='2', PADDLE_LOCAL_SIZE='2')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    assert out == [str(max(1, len(os.sched_getaffinity(0)) // 2)), '1', 'True']


def test_openmp_threads_sleep_after_1_ms_unless_told_otherwise():
    # read from the OpenMP runtime Paddle loads (libiomp5 in its wheel)
    code = ('import ctypes, os, environment; environment.setup(); import paddle; '
            'print(ctypes.CDLL(os.path.join(os.path.dirname(paddle.__file__), "libs", '
            '"libiomp5.so")).kmp_get_blocktime())')
    env = {k: v for k, v in os.environ.items() if k != 'KMP_BLOCKTIME'}
    for setting, expected in ((None, '1'), ('50', '50')):
        run_env = env if setting is None else dict(env, KMP_BLOCKTIME=setting)
        out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                             text=True, check=True, env=run_env).stdout
        assert out.split()[-1] == expected


def test_setup_keeps_freed_memory_for_the_next_step():
    """Freed activations are reused, not unmapped and page-faulted anew: after setup(), a 64 MB
    block allocated, written and freed costs no page faults the second time (by default glibc
    serves it with mmap, and faults on every page of it again: 16384, or 32 with transparent
    huge pages). A user's own glibc setting wins."""
    code = ('import ctypes, resource, sys, environment\n'
            'if sys.argv[1] != "default": environment.setup()\n'
            'libc = ctypes.CDLL("libc.so.6")\n'
            'libc.malloc.restype = ctypes.c_void_p\n'
            'libc.free.argtypes = [ctypes.c_void_p]\n'
            'faults = []\n'
            'for _ in range(3):  # as Paddle allocates a CPU tensor: malloc, written, freed\n'
            '    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n'
            '    block = libc.malloc(64 << 20)\n'
            '    ctypes.memset(block, 1, 64 << 20)\n'
            '    libc.free(block)\n'
            '    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n'
            'print(faults[-1])')
    clean = {k: v for k, v in os.environ.items()
             if k != 'GLIBC_TUNABLES' and not k.startswith('MALLOC_')}
    faults = {}
    for mode, env in (('setup', clean), ('default', clean),
                      ('user', dict(clean, MALLOC_MMAP_MAX_='65536'))):
        faults[mode] = int(subprocess.run([sys.executable, '-c', code, mode], cwd=ROOT, env=env,
                                          capture_output=True, text=True, check=True).stdout)
    assert faults['setup'] < 16
    assert faults['default'] >= 32 and faults['user'] >= 32
