"""What every plan is made of, and the one cache that keeps plans, their shared workspaces and
the package's only lock (its rule: the package docstring).

A plan holds the oneDNN primitives of one operation on one shape (`Pass`: one primitive and its
scratch memory). No Paddle here: data is passed by address.
"""
import collections
import functools
import threading
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from .dnnl import Handle, Library, dnnl_bf16, dnnl_f32

# Plans of every kind kept (least recently used out first): R3D-50's training steps in float32
# and bfloat16 and an eval pass of a shorter batch make 126 (conv 70, BN 36, sums 17, pool 3).
PLAN_CACHE_SIZE = 1024
_ALIGNMENT = 64  # bytes: a cache line, and oneDNN's preferred alignment
SCRATCHPAD_SLOT = 3  # the workspace of primitives' scratch memory (0-2: a convolution's copies)
DNNL_TYPES = {'float32': dnnl_f32, 'bfloat16': dnnl_bf16}
BYTES = {'float32': 4, 'bfloat16': 2}


class PlanCache:
    """Plans by key, built on first use (least recently used out beyond `size`), the workspaces
    they share, and the lock that serializes both: see `get` and `exclusive`."""

    def __init__(self, size: int):
        self.size = size
        self._plans = collections.OrderedDict()  # (type of key, key) -> plan
        self._workspaces = {}  # slot -> numpy buffer
        self._lock = threading.Lock()  # 0.2 us per call, against >10 us of work

    def get(self, key: tuple, build: Callable[[], object]):
        """The plan of `key` (a NamedTuple of its own type per kind of plan), made by `build()`
        on first use, under the lock."""
        with self._lock:
            entry = (type(key), key)
            plan = self._plans.get(entry)
            if plan is None:
                plan = self._plans[entry] = build()
                if len(self._plans) > self.size:
                    self._plans.popitem(last=False)
            else:
                self._plans.move_to_end(entry)
            return plan

    def keys(self, kind: Optional[type] = None) -> list:
        """The keys of the plans kept (of type `kind` only, if given), oldest first."""
        return [key for key_type, key in self._plans if kind is None or key_type is kind]

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()

    def exclusive(self, method: Callable) -> Callable:
        """Decorates a plan's method that runs oneDNN: the call holds the lock and, when it ends,
        frees the memory objects it made (`Library.release`)."""
        @functools.wraps(method)
        def locked(plan, *args, **kwargs):
            with self._lock:
                try:
                    return method(plan, *args, **kwargs)
                finally:
                    plan.library.release()
        return locked

    def workspace(self, slot: int, size: int) -> int:
        """The address of `size` bytes of workspace `slot` (aligned to _ALIGNMENT); only inside
        an `exclusive` method, whose lock keeps it to one call at a time.

        The copies in oneDNN's layouts and the scratch memory live in a few buffers that grow
        to the largest size asked for and are kept: no allocation per call (and no page
        faults on fresh memory)."""
        buffer = self._workspaces.get(slot)
        if buffer is None or buffer.size < size + _ALIGNMENT:
            buffer = self._workspaces[slot] = np.empty(size + _ALIGNMENT, np.uint8)
        return -buffer.ctypes.data % _ALIGNMENT + buffer.ctypes.data


PLANS = PlanCache(PLAN_CACHE_SIZE)
exclusive = PLANS.exclusive


class Pass(NamedTuple):
    """One primitive of a plan (e.g. a convolution's forward, backward-data or backward-weights)."""
    primitive: Handle
    operands: dict  # argument name -> conv_plan.Operand (empty: the tensors as they are)
    scratchpad: Handle  # descriptor of the scratch memory it asks for
    scratchpad_bytes: int

    def execute(self, library: Library, memories: dict) -> None:
        """Run the primitive on `memories` (argument -> memory), its scratch memory in the
        shared workspace."""
        if self.scratchpad_bytes:
            memories['scratchpad'] = library.memory(
                self.scratchpad, PLANS.workspace(SCRATCHPAD_SLOT, self.scratchpad_bytes))
        library.execute(self.primitive, memories)


def single_pass(library: Library, pd: Handle) -> Pass:
    """The pass of primitive descriptor `pd`, whose operands are Paddle's tensors as they are."""
    scratchpad = library.query(pd, 'scratchpad')
    return Pass(library.primitive(pd), {}, scratchpad, library.size(scratchpad))


class TensorPlan:
    """A plan of passes on Paddle's tensors as they are (`passes`: name -> `Pass`), which owns
    the primitive descriptors `pds` and memory descriptors `descs` and frees them with itself."""
    library: Library
    passes: dict
    pds: list
    descs: list

    def __del__(self):
        try:
            self.library.destroy([p.primitive for p in self.passes.values()], self.pds,
                                 self.descs)
        except Exception:  # at interpreter exit, ctypes may be gone first
            pass


def ncdhw(shape: Sequence[int]) -> list:
    """The NCDHW shape of a channels-last (NDHWC) tensor of `shape`."""
    return [shape[0], shape[-1], *shape[1:-1]]


def ndhwc(shape: Sequence[int]) -> list:
    """The shape of the channels-last (NDHWC) tensor of NCDHW `shape`."""
    return [shape[0], *shape[2:], shape[1]]
