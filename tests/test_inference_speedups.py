"""The fast inference path (oneDNN predictor) gives the plain dygraph path's outputs."""
import json

import numpy as np
import paddle
import pytest

import inference
from conftest import relative
from models.resnet import generate_model

N_CLASSES = 5


@pytest.fixture(scope='module')
def model():
    """A depth-10 ResNet with random weights and random BN statistics, in eval mode."""
    paddle.seed(0)
    rng = np.random.default_rng(0)
    net = generate_model(10, n_classes=N_CLASSES)
    for layer in net.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm3D):
            c = layer.weight.shape[0]
            layer.weight.set_value(rng.uniform(0.5, 1.5, c).astype('float32'))
            layer.bias.set_value(rng.normal(0, 0.1, c).astype('float32'))
            layer._mean.set_value(rng.normal(0, 0.1, c).astype('float32'))
            layer._variance.set_value(rng.uniform(0.5, 1.5, c).astype('float32'))
    net.eval()
    return net


def test_predictor_matches_dygraph(model):
    predictor = inference.OneDNNPredictor(model, n_input_channels=3)
    dygraph = inference.dygraph_logits(model)
    rng = np.random.default_rng(1)
    # a batch of center crops, then one uncropped clip of another frame size
    # (--inference_crop nocrop)
    for shape in ([3, 3, 8, 32, 32], [1, 3, 8, 32, 44], [3, 3, 8, 32, 32]):
        clips = rng.normal(size=shape).astype('float32')
        expected = dygraph(clips)
        assert expected.shape == (shape[0], N_CLASSES)
        assert relative(predictor(clips), expected) < 1e-4


def test_batch_norm_folding_keeps_logits(model):
    clips = np.random.default_rng(3).normal(size=[2, 3, 8, 32, 32]).astype('float32')
    folded = inference.fold_batch_norm(model, clips)
    assert folded is not model
    bns = [layer for layer in folded.sublayers() if isinstance(layer, paddle.nn.BatchNorm3D)]
    assert bns == []  # every BN of the ResNet follows a convolution
    assert all(layer.bias is None for layer in model.sublayers()
               if isinstance(layer, paddle.nn.Conv3D))
    predictor = inference.OneDNNPredictor(model, 3, sample_clips=clips)
    expected = inference.dygraph_logits(model)(clips)
    assert relative(inference.dygraph_logits(folded)(clips), expected) < 1e-5
    assert relative(predictor(clips), expected) < 1e-4


def test_auto_backend_on_cpu(model):
    """A ResNet whose trunk runs channels-last on oneDNN keeps dygraph (as fast per clip, no
    export); without that trunk the predictor is worth its export."""
    from models import onednn, pre_act_resnet
    paddle.set_device('cpu')
    clips = np.zeros([1, 3, 4, 32, 32], dtype='float32')
    assert model.runs_channels_last(paddle.to_tensor(clips))
    assert not isinstance(inference.make_logits_fn(model, clips), inference.OneDNNPredictor)
    with onednn.use_channels_last(False):
        assert isinstance(inference.make_logits_fn(model, clips), inference.OneDNNPredictor)
    other = pre_act_resnet.generate_model(10, n_classes=N_CLASSES)
    assert isinstance(inference.make_logits_fn(other, clips), inference.OneDNNPredictor)
    assert isinstance(inference.make_logits_fn(model, clips, 'onednn'), inference.OneDNNPredictor)
    assert not isinstance(inference.make_logits_fn(other, clips, 'dygraph'),
                          inference.OneDNNPredictor)
    with pytest.raises(ValueError, match='backend'):
        inference.make_logits_fn(model, clips, 'tensorrt')


def fake_loader(rng):
    """Batches of (clips [N, 3, 8, 32, 32], [(video_id, segment), ...]): 2 videos of 3 clips."""
    targets = [(f'v{v}', [1 + 8 * i, 9 + 8 * i]) for v in range(2) for i in range(3)]
    clips = rng.normal(size=(len(targets), 3, 8, 32, 32)).astype('float32')
    return [(clips[:4], targets[:4]), (clips[4:], targets[4:])]


def assert_same_results(actual, expected):
    """Same video ids, labels and order; scores within 1e-4 relative."""
    assert list(actual) == list(expected)
    for video_id in expected:
        a, e = actual[video_id], expected[video_id]
        if 'segment' in e[0]:
            assert [c['segment'] for c in a] == [c['segment'] for c in e]
            a, e = [r for c in a for r in c['result']], [r for c in e for r in c['result']]
        assert [r['label'] for r in a] == [r['label'] for r in e]
        np.testing.assert_allclose([r['score'] for r in a], [r['score'] for r in e], rtol=1e-4)


@pytest.mark.parametrize('no_average', [False, True])
def test_inference_json_same_with_both_backends(model, tmp_path, no_average):
    loader = fake_loader(np.random.default_rng(2))
    class_names = {i: f'class{i}' for i in range(N_CLASSES)}
    results = {}
    for backend in ('dygraph', 'onednn'):
        path = tmp_path / f'{backend}.json'
        returned = inference.inference(loader, model, path, class_names, no_average,
                                       output_topk=3, backend=backend)
        results[backend] = json.loads(path.read_text())['results']
        assert returned == {'results': results[backend]}
    assert sorted(results['dygraph']) == ['v0', 'v1']
    for entries in results['dygraph'].values():
        assert len(entries) == 3  # 3 clips, or the top 3 classes of the average
        assert ('segment' in entries[0]) == no_average
    assert_same_results(results['onednn'], results['dygraph'])


def test_benchmark_quick_runs_every_path(capsys):
    from util_scripts import benchmark
    benchmark.main(['--quick'])
    table = capsys.readouterr().out
    assert 'error' not in table
    for impl in ('paddle dygraph', 'paddle onednn', 'paddle project'):
        assert impl in table
    rows = [line.split('|') for line in table.splitlines() if line.startswith('| infer')]
    assert all(float(row[5]) > 0 for row in rows)  # clips/s
