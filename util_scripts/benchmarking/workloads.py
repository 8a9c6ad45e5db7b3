"""What the model jobs run: our R3D and the reference's, random clips, precision contexts, and the
FLOPs of a clip."""
import contextlib
import dataclasses

import numpy as np

from .case import Case

N_CLASSES = 400  # Kinetics-400, the reference's default


def random_batch(case: Case, seed: int = 0):
    """Clips [N, 3, T, H, W] and labels [N], as numpy arrays."""
    rng = np.random.default_rng(seed)
    shape = [case.batch_size, 3, case.sample_duration, case.sample_size, case.sample_size]
    return (rng.standard_normal(shape, dtype=np.float32),
            rng.integers(0, N_CLASSES, case.batch_size))


def paddle_model(case: Case):
    import paddle
    from models.resnet import generate_model
    paddle.seed(0)
    return generate_model(case.depth, n_classes=N_CLASSES)


def paddle_flops_per_clip(model, case: Case) -> float:
    """Multiply-adds x 2 of the Conv3D and Linear layers for one clip."""
    import paddle
    total = [0]

    def count(layer, inputs, output):
        if isinstance(layer, paddle.nn.Conv3D):
            weight = layer.weight.shape  # [out, in / groups, kT, kH, kW]
            total[0] += 2 * int(np.prod(output.shape)) * int(np.prod(weight[1:]))
        else:
            total[0] += 2 * int(np.prod(output.shape)) * layer.weight.shape[0]
    hooks = [layer.register_forward_post_hook(count) for layer in model.sublayers()
             if isinstance(layer, (paddle.nn.Conv3D, paddle.nn.Linear))]
    clips, _ = random_batch(dataclasses.replace(case, batch_size=1))
    model.eval()  # the callers set the mode they measure
    with paddle.no_grad():
        model(paddle.to_tensor(clips))
    for hook in hooks:
        hook.remove()
    return total[0]


def paddle_precision(case: Case):
    """The context of `--amp bfloat16` on CPU (training.autocast), or none for float32."""
    import training
    return lambda: training.autocast(case.dtype if case.dtype == 'bfloat16' else None)


def torch_setup(case: Case):
    import torch
    torch.set_num_threads(case.threads)
    torch.manual_seed(0)
    return torch


def torch_model(case: Case):
    from .reference import torch_resnet
    return torch_resnet(case.depth, N_CLASSES)


def torch_precision(torch, case: Case):
    """PyTorch's CPU mixed precision for bfloat16 rows (autocast), else nothing."""
    if case.dtype == 'bfloat16':
        return torch.autocast('cpu', dtype=torch.bfloat16)
    return contextlib.nullcontext()
