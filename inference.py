"""Clip-level inference, averaged per video, written as the reference's result json.

On CPU, a model whose dygraph forward runs channels-last on oneDNN (`resnet.ResNet`'s trunk,
and so the wide and ResNeXt variants) runs as it is. Other models run through a Paddle Inference
predictor with oneDNN (the model exported with `paddle.jit.save`, BN folded into the
convolutions): faster per clip than their dygraph forward, for seconds of export and set-up
(docs/performance.md); outputs within 1e-5 relative. Elsewhere, or when the export fails,
they run in dygraph.
"""
import contextlib
import copy
import json
import os
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm import tqdm

from models.resnet import ResNet
from training import autocast

BACKENDS = ('auto', 'onednn', 'dygraph')

# oneDNN keeps compiled kernels per input shape; with --inference_crop nocrop every video may
# have its own frame size, so keep only the kernels of the last few shapes.
ONEDNN_SHAPE_CACHE = 8


def get_video_results(scores: np.ndarray, class_names: Dict[int, str],
                      output_topk: int) -> List[dict]:
    """The `output_topk` best classes of one score vector, best first, as {label, score}."""
    k = min(output_topk, len(class_names))
    order = np.argsort(-scores, kind='stable')[:k]
    return [{'label': class_names[int(i)], 'score': float(scores[i])} for i in order]


@contextlib.contextmanager
def quiet_native_stderr():
    """Hide what Paddle's C++ side prints on stderr (fd 2) while exporting a static graph.

    `paddle.jit.save` logs a note for every residual `x + y` ("PIR not support input out tensor")
    that concerns no option of ours. What was printed is shown again if the export fails.
    """
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            os.write(2, log.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def cpu_threads() -> int:
    """The math threads to use: OMP_NUM_THREADS when set (`environment.setup` sets it),
    else the usable cores."""
    value = os.environ.get('OMP_NUM_THREADS', '')
    return int(value) if value.isdigit() and int(value) > 0 else len(os.sched_getaffinity(0))


def fold_batch_norm(model: paddle.nn.Layer, clips: np.ndarray) -> paddle.nn.Layer:
    """A copy of an eval-mode model whose BatchNorm3D layers that read a Conv3D's output directly
    are folded into that convolution (w * s, b = beta - mean * s, s = gamma / sqrt(var + eps)).

    The pairs are found by running `clips` [N, C, T, H, W] through the model. Paddle Inference
    fuses conv3d with a bias, a ReLU and a residual add, but not with a BN. Returns the model
    itself when nothing folds or the folded copy does not reproduce its logits within 1e-5.
    """
    made_by = {}  # id(output tensor) -> the Conv3D that made it
    pairs = []

    def after_conv(layer, inputs, output):
        made_by[id(output)] = layer

    def before_bn(layer, inputs):
        conv = made_by.get(id(inputs[0]))
        if conv is not None and conv.bias is None:
            pairs.append((conv, layer))
    hooks = [layer.register_forward_post_hook(after_conv) for layer in model.sublayers()
             if isinstance(layer, paddle.nn.Conv3D)]
    hooks += [layer.register_forward_pre_hook(before_bn) for layer in model.sublayers()
              if isinstance(layer, paddle.nn.BatchNorm3D)]
    model.eval()
    with paddle.no_grad():
        expected = model(paddle.to_tensor(clips)).numpy()
    for hook in hooks:
        hook.remove()
    if not pairs:
        return model

    # map the layers of the model to those of the copy by their structured names
    names = {id(layer): name for name, layer in model.named_sublayers()}
    folded = copy.deepcopy(model)
    layers = dict(folded.named_sublayers())
    for conv, bn in pairs:
        conv_copy = layers[names[id(conv)]]
        scale = bn.weight / paddle.sqrt(bn._variance + bn._epsilon)  # [C_out]
        conv_copy.weight.set_value(conv.weight * scale.reshape([-1, 1, 1, 1, 1]))
        conv_copy.bias = conv_copy.create_parameter([scale.shape[0]], is_bias=True)
        conv_copy.bias.set_value(bn.bias - bn._mean * scale)
        parent_name, _, child = names[id(bn)].rpartition('.')
        parent = layers[parent_name] if parent_name else folded
        parent._sub_layers[child] = paddle.nn.Identity()
    with paddle.no_grad():
        actual = folded(paddle.to_tensor(clips)).numpy()
    if np.abs(actual - expected).max() > 1e-5 * np.abs(expected).max():
        return model
    return folded


def saved_program(prefix: Path) -> Path:
    """The program file `paddle.jit.save` wrote for `prefix`: `.json` (Paddle 3, PIR) or `.pdmodel`
    (Paddle 2.6); its weights are `prefix.pdiparams`."""
    for suffix in ('.json', '.pdmodel'):
        program = prefix.with_name(prefix.name + suffix)
        if program.is_file():
            return program
    raise FileNotFoundError(f'no {prefix.name}.json or {prefix.name}.pdmodel in {prefix.parent}')


class Predictor:
    """A Paddle Inference predictor of a model saved with `paddle.jit.save` under `prefix`:
    logits [N, n_classes] of clips [N, C, T, H, W].

    On CPU it runs with oneDNN; with `use_gpu`, on GPU 0.
    """

    def __init__(self, prefix: Path, use_gpu: bool = False, threads: Optional[int] = None):
        prefix = Path(prefix)
        program = saved_program(prefix)
        config = paddle.inference.Config(str(program),
                                         str(prefix.with_name(prefix.name + '.pdiparams')))
        if use_gpu:
            config.enable_use_gpu(256, 0)  # initial memory pool (MB), device id
        else:
            config.disable_gpu()
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(ONEDNN_SHAPE_CACHE)
            config.set_cpu_math_library_num_threads(threads or cpu_threads())
        config.disable_glog_info()
        self.predictor = paddle.inference.create_predictor(config)  # reads the files now
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        """Logits [N, n_classes] of float32 clips [N, C, T, H, W]."""
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        self.input.reshape(list(clips.shape))
        self.input.copy_from_cpu(clips)
        self.predictor.run()
        return self.output.copy_to_cpu()


class OneDNNPredictor(Predictor):
    """A Paddle Inference predictor with oneDNN of an eval-mode model:
    logits of [N, C, T, H, W] clips.

    The model is exported with `paddle.jit.save` (input spec [None, C, None, None, None], so batch
    size, duration and frame size may vary from call to call) into a temporary folder. Paddle 3
    writes `model.json` (PIR), Paddle 2.6 `model.pdmodel`; both go with `model.pdiparams`.
    """

    def __init__(self, model: paddle.nn.Layer, n_input_channels: int, threads: Optional[int] = None,
                 sample_clips: Optional[np.ndarray] = None):
        model.eval()
        if sample_clips is not None:
            model = fold_batch_norm(model, sample_clips[:1])
        spec = paddle.static.InputSpec([None, n_input_channels, None, None, None], 'float32', 'x')
        with tempfile.TemporaryDirectory() as folder:
            prefix = Path(folder) / 'model'
            with quiet_native_stderr():
                paddle.jit.save(model, str(prefix), input_spec=[spec])
            super().__init__(prefix, threads=threads)


def dygraph_logits(model: paddle.nn.Layer, on_device: bool = False) -> Callable:
    """Logits of clips [N, C, T, H, W] (an array or a tensor) from the model as it is (eval
    mode, no gradients): an array, or with `on_device` a tensor left where it was computed."""
    model.eval()

    def logits(clips):
        with paddle.no_grad():
            out = model(clips if isinstance(clips, paddle.Tensor) else paddle.to_tensor(clips))
        return out if on_device else out.numpy()
    return logits


def needs_predictor(model: paddle.nn.Layer, sample_clips: np.ndarray) -> bool:
    """Whether the oneDNN predictor is worth its export for clips like `sample_clips` on the
    CPU: not for a model whose dygraph forward runs channels-last on oneDNN (`resnet.ResNet`'s
    trunk), about as fast per clip (docs/performance.md)."""
    if not isinstance(model, ResNet):
        return True
    return not model.runs_channels_last(paddle.to_tensor(sample_clips[:1], dtype='float32'))


def make_logits_fn(model: paddle.nn.Layer, sample_clips: np.ndarray, backend: str = 'auto',
                   on_device: bool = False) -> Callable:
    """The fastest way at hand to compute the model's logits of clips [N, C, T, H, W] like
    `sample_clips` (their C; T, H and W may vary).

    'auto' is dygraph on GPU and, on CPU, the oneDNN predictor unless the model runs as fast in
    dygraph (`needs_predictor`); it falls back to dygraph (with a warning) when the export
    fails. 'onednn' raises instead, 'dygraph' never exports.
    `on_device`: dygraph's logits stay a tensor on the device (the predictor's are an array).
    """
    if backend not in BACKENDS:
        raise ValueError(f'inference backend must be one of {BACKENDS}, got {backend!r}')
    on_cpu = paddle.device.get_device() == 'cpu'
    if backend == 'dygraph' or (backend == 'auto' and not (on_cpu and needs_predictor(
            model, sample_clips))):
        return dygraph_logits(model, on_device)
    if backend == 'onednn':
        return OneDNNPredictor(model, sample_clips.shape[1], sample_clips=sample_clips)
    try:
        return OneDNNPredictor(model, sample_clips.shape[1], sample_clips=sample_clips)
    except Exception as e:  # export and predictor creation raise many types; dygraph still works
        warnings.warn('inference runs in dygraph: the oneDNN predictor failed '
                      f'({type(e).__name__}: {e})', stacklevel=2)
        return dygraph_logits(model, on_device)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of logits [N, n_classes]."""
    return F.softmax(paddle.to_tensor(logits), axis=1).numpy()


def gather_clip_scores(clip_scores: dict, dataset) -> dict:
    """The clip scores of all processes of a data-parallel run, each of which ran a shard of the
    videos, in the order of `dataset.data` (that of a single-process run)."""
    import paddle.distributed as dist
    if dist.get_world_size() == 1:
        return clip_scores
    parts = []
    dist.all_gather_object(parts, dict(clip_scores))
    merged = {video_id: clips for part in parts for video_id, clips in part.items()}
    order = [sample['video_id'] for sample in getattr(dataset, 'data', [])]
    ordered = {video_id: merged.pop(video_id) for video_id in order if video_id in merged}
    ordered.update(merged)
    return ordered


def inference(data_loader, model, result_path: Optional[Path], class_names: Dict[int, str],
              no_average: bool, output_topk: int, backend: str = 'auto', amp=None) -> dict:
    """Softmax every clip, average over each video's clips (unless `no_average`), write json
    (unless `result_path` is None).

    The json is `{"results": {video_id: [{"label", "score"}, ...]}}`, or with `no_average`
    `{"results": {video_id: [{"segment": [begin, end], "result": [...]}, ...]}}`.
    `backend` is one of `BACKENDS` (see `make_logits_fn`). `amp` (main.py's --amp): the model
    runs in dygraph under `training.autocast` (on CPU, bfloat16 convolutions, faster than
    the float32 predictor: docs/performance.md). In a data-parallel run each process scores
    its shard and all return the results of every video.
    """
    if amp:
        backend = 'dygraph'
    model.eval()
    logits = None  # built at the first batch, which tells the number of input channels
    batch_scores, batch_targets = [], []  # on the device in dygraph: read once, at the end
    for inputs, targets in tqdm(data_loader, desc='inference', leave=False, dynamic_ncols=True):
        if logits is None:  # clips [N, C, T, H, W]
            logits = make_logits_fn(model, np.asarray(inputs[:1]), backend, on_device=True)
        with autocast(amp):
            out = logits(np.asarray(inputs) if isinstance(logits, Predictor) else inputs)
        batch_scores.append(F.softmax(out.astype('float32'), axis=1)
                            if isinstance(out, paddle.Tensor) else softmax(out))
        batch_targets.extend(targets)
    if batch_scores and isinstance(batch_scores[0], paddle.Tensor):  # one read from the device
        batch_scores = [paddle.concat(batch_scores).numpy()]
    scores = np.concatenate(batch_scores) if batch_scores else []  # [clips, n_classes]
    clip_scores = defaultdict(list)  # video_id -> [(segment, scores [n_classes])]
    for (video_id, segment), video_scores in zip(batch_targets, scores):
        clip_scores[video_id].append((list(segment), video_scores))
    clip_scores = gather_clip_scores(clip_scores, getattr(data_loader, 'dataset', None))

    results = {}
    for video_id, clips in clip_scores.items():
        if no_average:
            results[video_id] = [{'segment': segment,
                                  'result': get_video_results(s, class_names, output_topk)}
                                 for segment, s in clips]
        else:
            mean = np.mean([s for _, s in clips], axis=0)
            results[video_id] = get_video_results(mean, class_names, output_topk)
    inference_results = {'results': results}
    if result_path is not None:
        with Path(result_path).open('w') as f:
            json.dump(inference_results, f)
    return inference_results
