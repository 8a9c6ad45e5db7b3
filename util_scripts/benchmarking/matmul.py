"""The matmul peak that the model jobs' GFLOP/s are compared to: the fastest of Paddle's `a @ b`
(MKL; on AMD its AVX2 path), oneDNN's matmul (the library the training convolutions run on,
AVX-512 where the processor has it) and PyTorch's `a @ b`, n^3 float32."""
from .case import Case, time_calls
from .workloads import torch_setup


def paddle_matmul(case: Case) -> dict:
    """The faster of Paddle's `a @ b` and oneDNN's matmul."""
    import paddle
    n = case.matmul_size
    a, b = paddle.randn([n, n]), paddle.randn([n, n])
    results = [time_calls(lambda: (a @ b).numpy(), 1, max(3, case.repeats))]
    onednn_call = onednn_matmul(a, b)
    if onednn_call is not None:
        results.append(time_calls(onednn_call, 1, max(3, case.repeats)))
    return dict(min(results, key=lambda r: min(r['seconds'])), flops=2 * n ** 3)


def onednn_matmul(a, b):
    """A call computing a @ b with oneDNN's matmul primitive (models.onednn's library), or None."""
    import paddle
    from models import onednn
    library = onednn.library()
    if library is None:
        return None
    plan = onednn.MatmulPlan(library, a.shape, b.shape)
    c = paddle.empty([a.shape[0], b.shape[1]], dtype='float32')

    def call():
        plan.run(a.data_ptr(), b.data_ptr(), c.data_ptr())
        return c
    return call


def torch_matmul(case: Case) -> dict:
    torch = torch_setup(case)
    n = case.matmul_size
    a, b = torch.randn(n, n), torch.randn(n, n)
    return dict(time_calls(lambda: a @ b, 1, max(3, case.repeats)), flops=2 * n ** 3)
