"""models.onednn's binding to oneDNN's C API: every C function declared, the version checked,
and convolutions from several threads kept apart."""
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from models import onednn

pytestmark = [pytest.mark.skipif(onednn.load_error() is not None,
                                 reason=f'oneDNN not loadable: {onednn.load_error()}'),
              pytest.mark.usefixtures('cpu')]
ROOT = Path(__file__).resolve().parents[1]


def test_every_c_function_called_is_declared():
    called = set()
    for path in ('models/onednn.py', 'util_scripts/benchmark.py'):
        source = (ROOT / path).read_text()
        called |= set(re.findall(r"(?:call\(\s*'|lib\.)(dnnl_\w+)", source))
    assert 'dnnl_convolution_forward_primitive_desc_create' in called
    assert called <= set(onednn._SIGNATURES), called - set(onednn._SIGNATURES)
    lib = onednn.library().lib
    for name, (restype, argtypes) in onednn._SIGNATURES.items():
        function = getattr(lib, name)
        assert (function.restype, function.argtypes) == (restype, argtypes), name


def test_the_library_is_onednn_3():
    assert onednn.library().version.major == 3


@pytest.fixture
def unloaded(monkeypatch):
    """models.onednn as before its first load (restored afterwards)."""
    monkeypatch.setattr(onednn, '_library', None)
    monkeypatch.setattr(onednn, '_load_error', None)


def test_a_library_without_a_function_used_runs_paddles_kernel_with_one_warning(
        monkeypatch, unloaded):
    signatures = dict(onednn._SIGNATURES, dnnl_function_of_another_release=(None, []))
    monkeypatch.setattr(onednn, '_SIGNATURES', signatures)
    with pytest.warns(UserWarning, match=r"libdnnl.so.3: AttributeError: .*"
                                         r"dnnl_function_of_another_release.*Paddle's kernels"):
        assert onednn.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert onednn.library() is None


def test_a_wheel_without_onednn_runs_paddles_kernel_silently(monkeypatch, unloaded, tmp_path):
    monkeypatch.setattr(onednn, 'library_path', lambda: str(tmp_path / 'libdnnl.so.3'))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert onednn.library() is None and not onednn.enabled()
    assert 'OSError' in onednn.load_error()


def test_another_major_version_runs_paddles_kernel_with_one_warning(monkeypatch, unloaded):
    monkeypatch.setattr(onednn, '_version', lambda lib: onednn._Version(4, 1, 2))
    with pytest.warns(UserWarning, match=r"oneDNN 4\.1\.2 \(3\.x needed\).*Paddle's kernel"):
        assert onednn.library() is None
    layer = onednn.Conv3D(2, 3, 3, padding=1, bias_attr=False)
    x = paddle.randn([1, 2, 3, 4, 4])
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no second warning
        assert onednn.library() is None and not onednn.enabled()
        y = layer(x)
    assert 'OneDNNVersionError' in onednn.load_error()
    np.testing.assert_allclose(y.numpy(), F.conv3d(x, layer.weight, padding=1).numpy(),
                               rtol=1e-6)


def test_convolutions_in_two_threads_give_their_own_results():
    """The workspaces are shared: without the lock, one thread's copies overwrite the other's."""
    rng = np.random.default_rng(5)
    cases = [(rng.standard_normal([2, 8, 4, 12, 12], dtype=np.float32),
              rng.standard_normal([16, 8, 3, 3, 3], dtype=np.float32)),
             (rng.standard_normal([3, 16, 6, 10, 10], dtype=np.float32),
              rng.standard_normal([8, 16, 3, 3, 3], dtype=np.float32))]
    expected = [F.conv3d(paddle.to_tensor(x), paddle.to_tensor(w), padding=1).numpy()
                for x, w in cases]
    errors = []

    def convolve(i):
        x, w = (paddle.to_tensor(a) for a in cases[i])
        for _ in range(30):
            y = onednn.conv3d(x, w, [1, 1, 1], [1, 1, 1]).numpy()
            errors.append(float(np.abs(y - expected[i]).max() / np.abs(expected[i]).max()))

    threads = [threading.Thread(target=convolve, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 60 and max(errors) < 1e-4
