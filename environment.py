"""The process environment: math threads, MKL's AMD path, glibc's allocator, quiet start-up.

`setup()` is the first call of main.py and of every script that runs a model. Much of what it
sets is read once, when a library loads or the process starts (OpenMP's thread count when Paddle
is imported), so this module imports the standard library only.
"""
import contextlib
import importlib.util
import io
import os
import sys
import warnings

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
# The largest trim threshold mallopt takes (an int): the heap is practically never trimmed.
KEEP_BYTES = 2 ** 31 - 1
# glibc's own variables for these settings: where the user sets one, glibc keeps theirs.
USER_MALLOC_SETTINGS = ('MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_')


def setup(environ=os.environ) -> None:
    """Prepare this process for Paddle; call it before anything imports Paddle.

    - math threads, MKL's AMD switch and glibc's allocator (`set_cpu_math_env`);
    - one progress bar in a data-parallel run, the master's (tqdm reads TQDM_DISABLE on import);
    - warnings as one line each, written around the progress bar;
    - PyAV imported before Paddle (see below), and Paddle without the caution it prints for any
      thread count > 1.
    """
    set_cpu_math_env(environ)
    world = launched_world(environ)
    if world is not None and world[0] != 0:
        environ.setdefault('TQDM_DISABLE', '1')
    warnings.filterwarnings('ignore', message='No ccache found')
    warnings.filterwarnings('ignore', message='When training, we now always track global mean')
    warnings.showwarning = _show_warning
    # PyAV (--file_type video) before Paddle: Paddle 2.6 loads a zlib of its own that breaks
    # PyAV's when Paddle comes first ("zlib.error: ... inconsistent stream state")
    if importlib.util.find_spec('av') is not None:
        import av  # noqa: F401
    with contextlib.redirect_stderr(io.StringIO()):
        import paddle  # noqa: F401


def _show_warning(message, *args, **kwargs) -> None:
    """One `warning:` line, around tqdm's bars (also from loader workers: tqdm's lock is shared
    with the processes forked from this one)."""
    from tqdm import tqdm
    tqdm.write(f'warning: {message}', file=sys.stderr)


def is_amd_cpu() -> bool:
    """True on AMD x86 processors (read from /proc/cpuinfo; False where it cannot be read)."""
    try:
        with open('/proc/cpuinfo') as f:
            return 'AuthenticAMD' in f.read(1 << 16)
    except OSError:
        return False


def set_cpu_math_env(environ=os.environ) -> None:
    """Fast CPU math for Paddle; must run before `import paddle`. Variables already set win.

    OMP_NUM_THREADS: Paddle's CPU kernels run on one thread unless told; use the usable cores.
    MKL_DEBUG_CPU_TYPE=5: the MKL bundled with Paddle takes its generic path on AMD processors;
    5 selects its AVX2 kernels (2-core EPYC: 2048^3 matmul 30 -> 113 GFLOP/s, dygraph 3D
    ResNet-18 training 0.44 -> 1.39 clips/s). Intel processors ignore it: set on AMD only.
    Under paddle.distributed.launch the cores are shared by the processes of the node.
    KMP_BLOCKTIME=1: the Intel OpenMP of Paddle's wheel (libiomp5) keeps a math thread spinning
    200 ms after its work before it sleeps, taking the core from the loader workers beside it;
    1 ms, as Intel advises for PyTorch on CPUs: `--inference` over 64 videos with 2 workers on
    a 2-core EPYC 17.3 -> 16.8 s (float32), 12.2 -> 12.0 s (bfloat16), training steps and
    epochs unchanged.
    Also makes glibc's malloc keep freed memory (`keep_freed_memory`).
    """
    local_processes = max(1, int(environ.get('PADDLE_LOCAL_SIZE', 1)))
    threads = max(1, len(os.sched_getaffinity(0)) // local_processes)
    environ.setdefault('OMP_NUM_THREADS', str(threads))
    environ.setdefault('KMP_BLOCKTIME', '1')
    if is_amd_cpu():
        environ.setdefault('MKL_DEBUG_CPU_TYPE', '5')
    keep_freed_memory(environ)


def keep_freed_memory(environ=os.environ) -> None:
    """Let glibc's malloc keep freed memory for the next use (Linux; a no-op elsewhere, and
    where the user sets glibc's mmap or trim settings: `USER_MALLOC_SETTINGS`).

    Paddle's CPU tensors come straight from malloc, and glibc serves large blocks with mmap and
    unmaps them on free: each training step page-faults and zeroes its activations anew, a few
    GB per step. With mmap off and the heap (practically) never trimmed, the activations freed by
    one step serve the next, as a caching allocator would. A 2-core AMD EPYC, batch 8 of 16x112x112
    (before: a 1 MB mmap threshold with transparent huge pages): R3D-18 training step 2.02 ->
    1.70 s in float32, 1.30 -> 1.15 s in bfloat16; R3D-50 3.87 -> 2.60 s and 2.04 -> 1.71 s;
    steps within 3% of each other instead of up to 30%. The price: the process keeps its peak
    (R3D-18 1.31 -> 1.55 GB, R3D-50 2.13 -> 2.6 GB, flat over 40 steps). The model runs on the
    main thread, whose heap grows without limit; other threads' heaps stop at 64 MB, and their
    larger blocks still come from mmap. Loader workers call it too (`utils.WorkerSeeder`): their
    clips and batches are reused.
    """
    tunables = environ.get('GLIBC_TUNABLES', '')
    if any(name in environ for name in USER_MALLOC_SETTINGS) or any(
            f'glibc.malloc.{name}' in tunables for name in ('mmap_max', 'trim_threshold')):
        return
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
    except (OSError, AttributeError):
        pass


def launched_world(environ=os.environ):
    """(rank, number of processes) given by paddle.distributed.launch (PADDLE_TRAINER_ID,
    PADDLE_TRAINERS_NUM); None when this process was not started by it."""
    if 'PADDLE_TRAINERS_NUM' not in environ:
        return None
    return int(environ.get('PADDLE_TRAINER_ID', 0)), int(environ['PADDLE_TRAINERS_NUM'])
