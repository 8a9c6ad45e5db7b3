"""The process environment: math threads, MKL's AMD path, glibc's allocator, quiet start-up.

`setup()` is the first call of main.py and of every script that runs a model. Much of what it
sets is read once, when a library loads or the process starts (OpenMP's thread count when Paddle
is imported, glibc's tunables at exec), so this module imports the standard library only.
"""
import contextlib
import importlib.util
import io
import os
import sys
import warnings

# glibc's malloc serves blocks of at least this size with mmap, returning them on free.
MMAP_THRESHOLD = 1 << 20

# In data loader workers: glibc's largest mmap threshold (32 MB on 64-bit systems).
WORKER_MMAP_THRESHOLD = 32 << 20

# glibc tunable: malloc asks for transparent huge pages (where the kernel's THP mode is
# "madvise" or "always"), 512x fewer page faults on fresh activations. With it, a 3D ResNet-50
# training step on 2 cores: 2.8 -> 3.6 clips/s. Read when a process starts: see `with_huge_pages`.
HUGE_PAGES = 'glibc.malloc.hugetlb=1'


def setup(restart_with_huge_pages: bool = False, environ=os.environ) -> None:
    """Prepare this process for Paddle; call it before anything imports Paddle.

    - math threads, MKL's AMD switch and glibc's mmap threshold (`set_cpu_math_env`);
    - `restart_with_huge_pages`: start the process again with `HUGE_PAGES` (main.py's training
      runs; a no-op once set, or off Linux);
    - one progress bar in a data-parallel run, the master's (tqdm reads TQDM_DISABLE on import);
    - warnings as one line each, written around the progress bar;
    - PyAV imported before Paddle (see below), and Paddle without the caution it prints for any
      thread count > 1.
    """
    if restart_with_huge_pages and with_huge_pages(environ):
        # sys.orig_argv keeps `-m module` (3.10+); sys.argv is the script's command line
        command_line = sys.orig_argv[1:] if hasattr(sys, 'orig_argv') else sys.argv
        try:
            os.execv(sys.executable, [sys.executable, *command_line])
        except OSError:
            pass
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
    Also fixes glibc's mmap threshold (`fix_mmap_threshold`).
    """
    local_processes = max(1, int(environ.get('PADDLE_LOCAL_SIZE', 1)))
    threads = max(1, len(os.sched_getaffinity(0)) // local_processes)
    environ.setdefault('OMP_NUM_THREADS', str(threads))
    if is_amd_cpu():
        environ.setdefault('MKL_DEBUG_CPU_TYPE', '5')
    fix_mmap_threshold()


def fix_mmap_threshold() -> None:
    """Keep glibc from holding on to freed activations (Linux; a no-op elsewhere).

    glibc raises its mmap threshold, by default, to the size of each mmap-served block freed
    (up to 32 MB): the blocks of a 3D CNN's activations below that size then come from the heap,
    which keeps them after they are freed, fragmented. A training step of a 3D ResNet-50 at
    batch 8 peaked about 500 MB higher, and higher every step; a fixed threshold stops that.
    Fresh mmap blocks cost page faults on first use: see `HUGE_PAGES`.
    """
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def fix_worker_allocator() -> None:
    """In a data loader worker, let glibc reuse freed clips and batches (Linux; a no-op
    elsewhere).

    A worker allocates the same few arrays per clip (a training clip [3, 16, 112, 112] in float32
    is 2.4 MB): above main.py's 1 MB `MMAP_THRESHOLD` each one is a fresh mmap, page-faulted
    anew (1.4 ms to normalize a clip instead of 0.4). Workers hold no activations, so their
    blocks up to glibc's largest threshold come from the heap, which keeps up to twice that.
    """
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(-3, WORKER_MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 2 * WORKER_MMAP_THRESHOLD)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def with_huge_pages(environ=os.environ) -> bool:
    """Add `HUGE_PAGES` to GLIBC_TUNABLES (Linux, unless set); True when it was added, and the
    process must start anew (os.execv) for it to apply."""
    tunables = environ.get('GLIBC_TUNABLES', '')
    if not sys.platform.startswith('linux') or 'glibc.malloc.hugetlb' in tunables:
        return False
    environ['GLIBC_TUNABLES'] = ':'.join(filter(None, [tunables, HUGE_PAGES]))
    return True


def launched_world(environ=os.environ):
    """(rank, number of processes) given by paddle.distributed.launch (PADDLE_TRAINER_ID,
    PADDLE_TRAINERS_NUM); None when this process was not started by it."""
    if 'PADDLE_TRAINERS_NUM' not in environ:
        return None
    return int(environ.get('PADDLE_TRAINER_ID', 0)), int(environ['PADDLE_TRAINERS_NUM'])
