"""oneDNN's matmul of float32 matrices, for `util_scripts.benchmark`'s peak: what the library
the convolutions run on reaches on a plain GEMM. No Paddle here: data by address."""
import ctypes
from typing import Sequence

from .dnnl import Handle, Library, dnnl_ab
from .plans import TensorPlan, exclusive, single_pass


class MatmulPlan(TensorPlan):
    """c = a @ b for row-major float32 matrices a [m, k] and b [k, n]."""

    def __init__(self, library: Library, a_shape: Sequence[int], b_shape: Sequence[int]):
        self.library = library
        self.descs = [library.desc(shape, dnnl_ab)
                      for shape in (a_shape, b_shape, (a_shape[0], b_shape[1]))]
        pd = Handle()
        library.call('dnnl_matmul_primitive_desc_create', ctypes.byref(pd), library.engine,
                     self.descs[0], self.descs[1], None, self.descs[2], library.attr)
        self.pds = [pd]
        self.passes = {'forward': single_pass(library, pd)}

    @exclusive
    def run(self, a: int, b: int, c: int) -> None:
        """Write a @ b at `c` (addresses of the matrices' data)."""
        self.passes['forward'].execute(self.library, {
            name: self.library.memory(desc, pointer)
            for name, desc, pointer in zip(('src', 'weights', 'dst'), self.descs, (a, b, c))})
