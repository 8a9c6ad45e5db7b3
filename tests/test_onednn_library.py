"""models.onednn's binding to oneDNN's C API: every C function declared, the version checked,
and convolutions from several threads kept apart."""
import ast
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from models import onednn
from models.onednn import dnnl

pytestmark = [pytest.mark.skipif(onednn.load_error() is not None,
                                 reason=f'oneDNN not loadable: {onednn.load_error()}'),
              pytest.mark.usefixtures('cpu')]
ROOT = Path(__file__).resolve().parents[1]


def test_every_c_function_called_is_declared():
    called = set()
    for path in [*(ROOT / 'models/onednn').glob('*.py'), ROOT / 'util_scripts/benchmark.py']:
        source = path.read_text()
        called |= set(re.findall(r"(?:call\(\s*'|lib\.)(dnnl_\w+)", source))
    assert 'dnnl_convolution_forward_primitive_desc_create' in called
    assert called <= set(dnnl.SIGNATURES), called - set(dnnl.SIGNATURES)
    lib = onednn.library().lib
    for name, (restype, argtypes) in dnnl.SIGNATURES.items():
        function = getattr(lib, name)
        assert (function.restype, function.argtypes) == (restype, argtypes), name


def test_the_library_is_onednn_3():
    assert onednn.library().version.major == 3


@pytest.fixture
def unloaded(monkeypatch):
    """models.onednn as before its first load (restored afterwards)."""
    monkeypatch.setattr(dnnl, '_loaded', None)


def test_a_library_without_a_function_used_runs_paddles_kernel_with_one_warning(
        monkeypatch, unloaded):
    signatures = dict(dnnl.SIGNATURES, dnnl_function_of_another_release=(None, []))
    monkeypatch.setattr(dnnl, 'SIGNATURES', signatures)
    with pytest.warns(UserWarning, match=r"libdnnl.so.3: AttributeError: .*"
                                         r"dnnl_function_of_another_release.*Paddle's kernels"):
        assert onednn.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert onednn.library() is None


def test_a_wheel_without_onednn_runs_paddles_kernel_silently(monkeypatch, unloaded, tmp_path):
    monkeypatch.setattr(dnnl, 'library_path', lambda: str(tmp_path / 'libdnnl.so.3'))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert onednn.library() is None and not onednn.enabled()
    assert 'OSError' in onednn.load_error()


def test_another_major_version_runs_paddles_kernel_with_one_warning(monkeypatch, unloaded):
    monkeypatch.setattr(dnnl, 'version', lambda lib: dnnl.Version(4, 1, 2))
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


def test_the_c_layer_imports_no_paddle():
    """dnnl, plans, conv_plan, settings and matmul pass data by address: Paddle stays above."""
    for name in ('dnnl', 'plans', 'conv_plan', 'settings', 'matmul'):
        tree = ast.parse((ROOT / 'models/onednn' / f'{name}.py').read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module or '' for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        assert not {m for m in imported if m.split('.')[0] == 'paddle'}, name


def test_the_plan_cache_drops_the_least_recently_used_plan():
    cache = onednn.plans.PlanCache(2)
    built = []

    def get(key):
        return cache.get(key, lambda: built.append(key) or object())
    a = get(onednn.pool.PoolKey((1,), (1,), (1,), (0,), False))
    get(onednn.norm.NormKey((1,), 1e-5, False, False))
    assert get(onednn.pool.PoolKey((1,), (1,), (1,), (0,), False)) is a  # kept, now newest
    get(onednn.residual.AddKey((1,), 'float32', False))  # the NormKey's plan leaves
    assert len(built) == 3
    assert cache.keys() == [onednn.pool.PoolKey((1,), (1,), (1,), (0,), False),
                            onednn.residual.AddKey((1,), 'float32', False)]
    assert cache.keys(onednn.norm.NormKey) == []


def test_a_setting_holds_in_its_own_thread_only():
    seen = []
    with onednn.use_onednn(False), onednn.channels_last():
        thread = threading.Thread(target=lambda: seen.append(
            (onednn.use_onednn.current(), onednn.channels_last_active())))
        thread.start()
        thread.join()
        assert not onednn.enabled() and onednn.channels_last_active()
    assert seen == [(True, False)]
    assert onednn.enabled() and not onednn.channels_last_active()


def test_onednns_matmul_multiplies():
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal(s, dtype=np.float32) for s in ([5, 300], [300, 7]))
    c = np.empty([5, 7], np.float32)
    onednn.MatmulPlan(onednn.library(), a.shape, b.shape).run(a.ctypes.data, b.ctypes.data,
                                                             c.ctypes.data)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)
