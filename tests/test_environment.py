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
