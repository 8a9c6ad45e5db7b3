"""Build models from options, load pretrained weights, choose the parameters to fine-tune."""
from pathlib import Path

import numpy as np
import paddle
import paddle.nn as nn

from checkpoints import verify_weights
from models import densenet, pre_act_resnet, resnet, resnet2p1d, resnext, wide_resnet
from models.resnet import linear
from utils import UserError

# --model -> the module whose generate_model builds it
MODELS = {
    'resnet': resnet,
    'resnet2p1d': resnet2p1d,
    'preresnet': pre_act_resnet,
    'wideresnet': wide_resnet,
    'resnext': resnext,
    'densenet': densenet,
}


def get_device(no_cuda: bool) -> str:
    """'gpu' when Paddle has CUDA and a GPU is visible (and --no_cuda is not given), else 'cpu'."""
    if not no_cuda and paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return 'gpu'
    return 'cpu'


def resolve_weights_path(path: Path) -> Path:
    """`data/pretrain` means `data/pretrain.pdparams` (Paddle's habit); both spellings work."""
    path = Path(path)
    if path.is_file():
        return path
    with_suffix = path.with_name(path.name + '.pdparams')
    if with_suffix.is_file():
        return with_suffix
    raise UserError(f'weights file not found: {path} (nor {with_suffix})')


def load_state_dict(path: Path) -> dict:
    """Read a Paddle state dict (`.pdparams`, including Paddle 1.8 `save_dygraph` files)
    as arrays; a checkpoint's weights are checked against the checksum of its .pdopt."""
    path = resolve_weights_path(path)
    if path.suffix in ('.pth', '.pt'):
        raise UserError(f'{path} is a PyTorch checkpoint: convert it first with '
                        f'python -m util_scripts.convert_pytorch_weights {path} '
                        f'{path.with_suffix(".pdparams")}')
    verify_weights(path)
    try:
        state = paddle.load(str(path), return_numpy=True)
    except Exception as e:  # paddle.load raises several types for foreign or damaged files
        raise UserError(f'cannot read weights {path}: {e}') from e
    if not isinstance(state, dict) or not state:
        raise UserError(f'{path} holds no state dict')
    return {key[len('module.'):] if key.startswith('module.') else key: value
            for key, value in state.items()}


def check_state_dict(model: nn.Layer, state: dict, path: Path) -> None:
    """Raise a UserError listing missing keys, unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k}: file {list(np.shape(state[k]))} vs model {list(own[k].shape)}'
              for k in own if k in state and list(np.shape(state[k])) != list(own[k].shape)]
    problems = []
    for title, items in (('missing', missing), ('unexpected', unexpected),
                         ('shape mismatch', shapes)):
        if items:
            shown = ', '.join(items[:8]) + (f', ... ({len(items)} in all)'
                                            if len(items) > 8 else '')
            problems.append(f'{title}: {shown}')
    if problems:
        raise UserError(f'weights {path} do not fit the model; ' + '; '.join(problems))


def classifier_name(model_name: str) -> str:
    return 'classifier' if model_name == 'densenet' else 'fc'


def generate_model(opt) -> nn.Layer:
    """The model `opt.model` of depth `opt.model_depth` with `opt.n_classes` outputs."""
    kwargs = dict(model_depth=opt.model_depth, n_classes=opt.n_classes,
                  n_input_channels=opt.n_input_channels, conv1_t_size=opt.conv1_t_size,
                  conv1_t_stride=opt.conv1_t_stride, no_max_pool=opt.no_max_pool)
    if opt.model != 'densenet':
        kwargs['shortcut_type'] = opt.resnet_shortcut
    if opt.model in ('resnet', 'resnet2p1d'):
        kwargs['widen_factor'] = opt.resnet_widen_factor
    if opt.model == 'wideresnet':
        kwargs['k'] = opt.wide_resnet_k
    if opt.model == 'resnext':
        kwargs['cardinality'] = opt.resnext_cardinality
    try:
        model = MODELS[opt.model].generate_model(**kwargs)
    except ValueError as e:
        raise UserError(f'--model {opt.model} --model_depth {opt.model_depth}: {e}') from e
    return track_unbiased_variance(model)


def track_unbiased_variance(model: nn.Layer) -> nn.Layer:
    """Make every BatchNorm layer of `model` track the running variance as the reference does.

    Paddle updates it with the batch's biased variance (divided by n), PyTorch with the unbiased
    one (divided by n - 1, n = the values per channel: N x T x H x W): eval-mode statistics would
    drift from the reference's by about 1/n per step. After each training forward pass, the
    update is scaled by n / (n - 1). With momentum m, Paddle's update is
    var' = m * var + (1 - m) * batch_var, so (1 - m) * batch_var = var' - m * var, and adding
    (var' - m * var) / (n - 1) gives PyTorch's. Only per-channel vectors are touched.
    """
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, nn.layer.norm._BatchNormBase) and not hasattr(layer, '_var_before'):
            layer._var_before = None
            layer.register_forward_pre_hook(_keep_running_variance)
            layer.register_forward_post_hook(_unbias_running_variance)
    return model


def _keep_running_variance(layer, inputs):
    if layer.training and not layer._use_global_stats:
        layer._var_before = layer._variance.clone()


def _unbias_running_variance(layer, inputs, output):
    before, layer._var_before = layer._var_before, None
    if before is None:
        return
    x = inputs[0]
    n = int(np.prod(x.shape)) // layer._mean.shape[0]  # values per channel, in any layout
    if isinstance(layer, nn.SyncBatchNorm):
        n *= paddle.distributed.get_world_size()
    if n > 1:
        with paddle.no_grad():
            new = layer._variance
            # a copy on the device, not blocking: set_value reads the tensor to the host in
            # Paddle 2.6, and in-place ops (add_, paddle.assign) bump the version that
            # batch_norm's backward checks on the running variance it keeps
            new.copy_(new + (new - layer._momentum * before) / (n - 1), False)


def load_pretrained_model(model: nn.Layer, pretrain_path: Path, model_name: str,
                          n_finetune_classes: int) -> nn.Layer:
    """Load weights made for the model as built,
    then give it a new classifier of n_finetune_classes."""
    path = resolve_weights_path(pretrain_path)
    state = load_state_dict(path)
    head = classifier_name(model_name)
    head_layer = getattr(model, head)
    n_out = head_layer.weight.shape[1]
    file_head = state.get(f'{head}.weight')
    if file_head is not None and np.ndim(file_head) == 2 and file_head.shape[1] != n_out:
        raise UserError(f'--n_pretrain_classes {n_out} does not fit {path}: its {head} has '
                        f'{file_head.shape[1]} outputs')
    check_state_dict(model, state, path)
    model.set_state_dict(state)
    setattr(model, head, linear(head_layer.weight.shape[0], n_finetune_classes))
    return model


def get_module_name(name: str) -> str:
    """Top-level module of a parameter name (`layer1.0.conv1.weight` -> `layer1`)."""
    parts = name.split('.')
    i = 1 if parts[0] == 'module' else 0
    if parts[i] == 'features':  # densenet keeps its blocks under `features`
        i += 1
    return parts[i]


def get_fine_tuning_parameters(model: nn.Layer, ft_begin_module: str):
    """The parameters of `ft_begin_module` and of every module after it; the others are frozen.

    An empty `ft_begin_module` fine-tunes everything. (Paddle lists BN statistics among the
    parameters, with stop_gradient set; they are never returned.)
    """
    named = [(k, p) for k, p in model.named_parameters() if not p.stop_gradient]
    if not ft_begin_module:
        return [p for _, p in named]
    names = [get_module_name(k) for k, _ in named]
    if ft_begin_module not in names:
        modules = ', '.join(dict.fromkeys(names))
        raise UserError(f'--ft_begin_module {ft_begin_module!r} is not a module of the model '
                        f'({modules})')
    first = names.index(ft_begin_module)
    for _, p in named[:first]:
        p.stop_gradient = True
    return [p for _, p in named[first:]]
