"""inference.py: softmax per clip, video average, top-k, the reference's json layout."""
import json

import numpy as np
import paddle
import pytest

from conftest import count_host_reads
from inference import get_video_results, inference

CLASS_NAMES = {0: 'a', 1: 'b', 2: 'c'}


class FirstPixels(paddle.nn.Layer):
    """Logits = the first three time steps of pixel (0, 0, channel 0): [N, C, T, H, W] -> [N, 3]."""

    def forward(self, x):
        return x[:, 0, :3, 0, 0]


def clips(logits):
    """Clips [N, 1, 3, 1, 1] whose FirstPixels logits are `logits`."""
    return paddle.to_tensor(np.asarray(logits, 'float32')[:, None, :, None, None])


def softmax(v):
    e = np.exp(np.asarray(v, 'float64') - np.max(v))
    return e / e.sum()


# two batches; video v1's three clips are split across them
BATCHES = [
    (clips([[0, 1, 2], [2, 0, 0]]), [('v1', [1, 17]), ('v1', [17, 33])]),
    (clips([[0, 0, 3], [1, 1, 1]]), [('v1', [33, 40]), ('v2', [1, 17])]),
]


def test_average_over_a_videos_clips_sorted_top_k(tmp_path):
    result = inference(BATCHES, FirstPixels(), tmp_path / 'val.json', CLASS_NAMES,
                       no_average=False, output_topk=2, backend='dygraph')
    written = json.loads((tmp_path / 'val.json').read_text())
    assert written == json.loads(json.dumps(result))
    assert set(written) == {'results'} and set(written['results']) == {'v1', 'v2'}
    expected = (softmax([0, 1, 2]) + softmax([2, 0, 0]) + softmax([0, 0, 3])) / 3
    v1 = written['results']['v1']
    assert [r['label'] for r in v1] == ['c', 'a']  # expected = [0.30, 0.13, 0.57]
    np.testing.assert_allclose([r['score'] for r in v1], expected[[2, 0]], rtol=1e-6)
    v2 = written['results']['v2']
    assert len(v2) == 2
    np.testing.assert_allclose([r['score'] for r in v2], [1 / 3, 1 / 3], rtol=1e-6)


def test_no_average_keeps_each_segment(tmp_path):
    inference(BATCHES, FirstPixels(), tmp_path / 'val.json', CLASS_NAMES, no_average=True,
              output_topk=1, backend='dygraph')
    v1 = json.loads((tmp_path / 'val.json').read_text())['results']['v1']
    assert [r['segment'] for r in v1] == [[1, 17], [17, 33], [33, 40]]
    assert [r['result'][0]['label'] for r in v1] == ['c', 'a', 'c']
    assert v1[2]['result'][0]['score'] == pytest.approx(softmax([0, 0, 3])[2], rel=1e-6)


def test_dygraph_scores_are_read_from_the_device_once(monkeypatch):
    expected = inference(BATCHES, FirstPixels(), None, CLASS_NAMES, True, 3, backend='dygraph')
    reads = count_host_reads(monkeypatch)
    batches = BATCHES * 3
    result = inference(batches, FirstPixels(), None, CLASS_NAMES, True, 3, backend='dygraph')
    # the first batch's clip (a sample for the predictor's export), then all scores at once
    assert reads == ['numpy'] * 2
    monkeypatch.undo()
    # the same outputs: each video's clips three times over
    assert result['results'] == {video: clips * 3 for video, clips in expected['results'].items()}


def test_topk_is_capped_at_the_number_of_classes():
    results = get_video_results(np.array([0.2, 0.5, 0.3]), CLASS_NAMES, 10)
    assert [r['label'] for r in results] == ['b', 'c', 'a']
    assert [r['score'] for r in results] == pytest.approx([0.5, 0.3, 0.2])


def test_bfloat16_inference_scores_stay_within_2e_2_of_float32():
    from models import onednn
    from models.resnet import generate_model
    if not onednn.bfloat16_supported():
        pytest.skip('this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16)')
    paddle.set_device('cpu')
    paddle.seed(0)
    model = generate_model(10, n_classes=5, widen_factor=0.5)
    rng = np.random.default_rng(0)
    batches = [(paddle.to_tensor(rng.standard_normal([2, 3, 8, 32, 32]).astype('float32')),
                [(f'v{i}', [1, 9]), (f'v{i}', [9, 17])]) for i in range(3)]
    names = {i: str(i) for i in range(5)}
    exact = inference(batches, model, None, names, False, 5, backend='dygraph')['results']
    rounded = inference(batches, model, None, names, False, 5, amp='bfloat16')['results']
    differences = [abs(a['score'] - {r['label']: r['score'] for r in rounded[v]}[a['label']])
                   for v in exact for a in exact[v]]
    assert 0 < max(differences) < 2e-2  # bfloat16 shows, within its tolerance
