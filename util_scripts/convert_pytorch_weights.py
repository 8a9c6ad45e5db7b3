"""Convert a checkpoint of the reference (PyTorch `.pth`) into a Paddle state dict (`.pdparams`).

    python -m util_scripts.convert_pytorch_weights r3d50_KM_200ep.pth r3d50_KM_200ep.pdparams
    python -m util_scripts.convert_pytorch_weights save_200.pth save_200.pdparams \\
        --model resnext --model_depth 101 --resnext_cardinality 32

The checkpoint is `{'epoch', 'arch', 'state_dict', ...}` as the reference saves it, or a bare state
dict; DataParallel's `module.` prefixes are stripped. The model is `arch` ('resnet-50',
'densenet-121', ...) unless --model / --model_depth say otherwise, with the class count taken from
`fc` (`classifier`); the other model options are the training script's. Every tensor is checked
against that model; Linear weights are transposed ([out, in] -> [in, out]), BN's running_mean and
running_var become `_mean` and `_variance`, and num_batches_tracked is dropped.

PyTorch is not needed: both of `torch.save`'s formats are read here. The zip format (PyTorch
>= 1.6) is a zip of `<name>/data.pkl` and the raw little-endian storages `<name>/data/<key>`. The
legacy format (`_use_new_zipfile_serialization=False`, every file of PyTorch < 1.6) is a sequence of
pickles: magic number, protocol version, system info, the object, the list of storage keys; then
for each storage an int64 element count and its raw data. In both, the object pickle refers to
storages by persistent ids and rebuilds tensors with `torch._utils._rebuild_tensor[_v2]`; the
unpickler below maps those to numpy and builds nothing else (other classes become inert stand-ins).
"""
import argparse
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import environment

environment.setup()  # before Paddle is imported

import numpy as np
import paddle
import paddle.nn as nn

from model import MODELS
from utils import UserError, run_cli

# torch's storage classes (torch.FloatStorage, torch.cuda.FloatStorage, ...) -> numpy dtypes
STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}
LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c  # torch/serialization.py
LEGACY_PROTOCOL_VERSION = 1001


# --- reading .pth files --------------------------------------------------------------------------

class StorageType:
    """Stands for a torch storage class in the pickle; knows its numpy dtype."""

    def __init__(self, name: str):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class Opaque:
    """Inert stand-in for a class the unpickler does not know (in optimizer or scheduler states):
    takes any arguments and state and keeps none."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def rebuild_tensor(storage: np.ndarray, storage_offset: int, size, stride, *_) -> np.ndarray:
    """A view of `storage` with torch's size, stride (in elements) and offset."""
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=tuple(size),
                                           strides=strides)


def rebuild_parameter(data: np.ndarray, *_) -> np.ndarray:
    return data


def rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)


def as_str(value) -> str:
    """Pickles written by Python 2 give bytes where Python 3 gives str."""
    return value.decode('ascii') if isinstance(value, bytes) else value


class TorchUnpickler(pickle.Unpickler):
    """Unpickles torch.save's object pickle into numpy arrays; `load_storage(key, dtype, numel,
    saved_id)` provides the storages."""

    GLOBALS = {
        ('torch._utils', '_rebuild_tensor'): rebuild_tensor,
        ('torch._utils', '_rebuild_tensor_v2'): rebuild_tensor,
        ('torch._utils', '_rebuild_parameter'): rebuild_parameter,
        ('torch._tensor', '_rebuild_from_type_v2'): rebuild_from_type_v2,
        ('collections', 'OrderedDict'): OrderedDict,
    }

    def __init__(self, file, load_storage):
        super().__init__(file, encoding='utf-8')
        self.load_storage = load_storage

    def find_class(self, module: str, name: str):
        if (module, name) in self.GLOBALS:
            return self.GLOBALS[module, name]
        if module in ('torch', 'torch.cuda') and name in STORAGE_DTYPES:
            return StorageType(name)
        return type(name, (Opaque,), {'__module__': module})

    def persistent_load(self, saved_id):
        if as_str(saved_id[0]) != 'storage':
            raise pickle.UnpicklingError(f'unknown persistent id {saved_id[0]!r}')
        storage_type, key, numel = saved_id[1], as_str(saved_id[2]), saved_id[4]
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f'unsupported storage type {storage_type!r}')
        return self.load_storage(key, storage_type.dtype, numel, saved_id)


def load_zip(path: Path):
    """Load a checkpoint in torch.save's zip format (PyTorch >= 1.6)."""
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith('data.pkl')]
        if len(pickles) != 1:
            raise UserError(f'{path} is a zip file but not a PyTorch checkpoint (no data.pkl)')
        prefix = pickles[0][:-len('data.pkl')]
        names = set(archive.namelist())
        byteorder = archive.read(prefix + 'byteorder').decode() \
            if prefix + 'byteorder' in names else 'little'

        def load_storage(key, dtype, numel, saved_id):
            dtype = dtype.newbyteorder('<' if byteorder == 'little' else '>')
            return np.frombuffer(archive.read(f'{prefix}data/{key}'), dtype=dtype)

        with archive.open(pickles[0]) as f:
            return TorchUnpickler(f, load_storage).load()


def load_legacy(path: Path):
    """Load a checkpoint in torch.save's legacy format (PyTorch < 1.6 or
    `_use_new_zipfile_serialization=False`)."""
    storages = {}

    def load_storage(key, dtype, numel, saved_id):
        if key not in storages:
            storages[key] = np.empty(numel, dtype=dtype)  # filled in after the object pickle
        view_metadata = saved_id[5] if len(saved_id) > 5 else None
        if view_metadata is None:
            return storages[key]
        _, offset, view_size = view_metadata
        return storages[key][offset:offset + view_size]

    def no_storage(*_):
        raise pickle.UnpicklingError('storage outside the object pickle')

    with path.open('rb') as f:
        try:
            magic = TorchUnpickler(f, no_storage).load()
        except Exception:  # whatever a file that is not a pickle makes the unpickler raise
            magic = None
        if magic != LEGACY_MAGIC_NUMBER:
            raise UserError(f'{path} is not a PyTorch checkpoint (neither a zip archive with '
                            'data.pkl nor a legacy torch.save file)')
        protocol = TorchUnpickler(f, no_storage).load()
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise UserError(f'{path}: unsupported legacy PyTorch protocol version {protocol}')
        TorchUnpickler(f, no_storage).load()  # system info: little-endian, type sizes
        obj = TorchUnpickler(f, load_storage).load()
        for key in TorchUnpickler(f, no_storage).load():
            storage = storages[as_str(key)]
            numel = int(np.frombuffer(f.read(8), dtype='<i8')[0])
            data = storage.view(np.uint8)
            if numel != storage.size or f.readinto(data) != data.size:
                raise UserError(f'{path} is truncated or corrupt (storage {as_str(key)})')
    return obj


def load_checkpoint(path: Path):
    """Load a `torch.save` file of either format; tensors become numpy arrays."""
    if not path.is_file():
        raise UserError(f'{path} does not exist')
    try:
        return load_zip(path) if zipfile.is_zipfile(path) else load_legacy(path)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, KeyError) as e:
        raise UserError(f'{path} cannot be read as a PyTorch checkpoint: {e}') from e


# --- mapping to our models -----------------------------------------------------------------------

def summarize(names: Sequence[str], limit: int = 8) -> str:
    """The first `limit` names, comma-separated, and how many more there are."""
    shown = ', '.join(names[:limit])
    return shown + (f' ... ({len(names) - limit} more)' if len(names) > limit else '')


def extract_state_dict(checkpoint, path: Path) -> Tuple[Dict[str, np.ndarray], Optional[str]]:
    """(state dict with DataParallel's `module.` stripped, arch or None) of a loaded checkpoint."""
    arch = None
    if isinstance(checkpoint, dict) and 'state_dict' in checkpoint:
        arch = checkpoint.get('arch')
        checkpoint = checkpoint['state_dict']
    if not isinstance(checkpoint, dict):
        raise UserError(f'{path} holds neither a state dict nor a checkpoint with "state_dict"')
    not_tensors = [k for k, v in checkpoint.items() if not isinstance(v, np.ndarray)]
    if not_tensors:
        raise UserError(f'{path}: these state dict entries are not dense tensors: '
                        f'{summarize(not_tensors)}')
    prefix = 'module.'
    state_dict = OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v)
                             for k, v in checkpoint.items())
    return state_dict, None if arch is None else as_str(arch)


def paddle_name(torch_name: str) -> Optional[str]:
    """Our parameter name for a tensor of the reference, or None for tensors Paddle has not."""
    module, _, leaf = torch_name.rpartition('.')
    if leaf == 'num_batches_tracked':
        return None
    leaf = {'running_mean': '_mean', 'running_var': '_variance'}.get(leaf, leaf)
    return f'{module}.{leaf}' if module else leaf


def parse_arch(arch: Optional[str], path: Path, model: Optional[str],
               model_depth: Optional[int]) -> Tuple[str, int]:
    """(model, depth) from the checkpoint's arch ('resnet-50'); --model and --model_depth win."""
    if model is not None and model_depth is not None:
        return model, model_depth
    if arch is None:
        raise UserError(f'{path} has no "arch": pass --model and --model_depth')
    name, _, depth = arch.rpartition('-')
    if name not in MODELS or not depth.isdigit():
        raise UserError(f'{path}: unknown arch {arch!r} (expected MODEL-DEPTH with MODEL one of '
                        f'{", ".join(MODELS)}); pass --model and --model_depth')
    return model or name, int(depth) if model_depth is None else model_depth


def build_model(model: str, model_depth: int, n_classes: int,
                args: argparse.Namespace) -> nn.Layer:
    """Our model with the training script's options, parameters allocated lazily (shapes only)."""
    kwargs = dict(n_classes=n_classes, n_input_channels=args.n_input_channels,
                  conv1_t_size=args.conv1_t_size, conv1_t_stride=args.conv1_t_stride,
                  no_max_pool=args.no_max_pool)
    if model != 'densenet':  # the families built on resnet.ResNet
        kwargs.update(shortcut_type=args.resnet_shortcut, widen_factor=args.resnet_widen_factor)
    kwargs.update({'wideresnet': dict(k=args.wide_resnet_k),
                   'resnext': dict(cardinality=args.resnext_cardinality)}.get(model, {}))
    with paddle.LazyGuard():
        try:
            return MODELS[model].generate_model(model_depth, **kwargs)
        except ValueError as e:
            raise UserError(str(e)) from e


def convert_state_dict(state_dict: Dict[str, np.ndarray], model: nn.Layer, path: Path,
                       description: str) -> Dict[str, np.ndarray]:
    """The reference's state dict as `model`'s, in float32; one error lists every mismatch."""
    linear_weights = {f'{name}.weight' for name, layer in model.named_sublayers()
                      if isinstance(layer, nn.Linear)}
    converted = {}
    for torch_name, value in state_dict.items():
        name = paddle_name(torch_name)
        if name is not None:
            converted[name] = value.T if name in linear_weights else value
    expected = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    missing = [name for name in expected if name not in converted]
    unexpected = [name for name in converted if name not in expected]
    wrong_shape = [f'{name} {list(converted[name].shape)} (model: {shape})'
                   for name, shape in expected.items()
                   if name in converted and list(converted[name].shape) != shape]
    problems = [f'{kind}: {summarize(names)}' for kind, names in
                [('missing', missing), ('unexpected', unexpected), ('wrong shape', wrong_shape)]
                if names]
    if problems:
        raise UserError(f'{path} does not fit {description}: {"; ".join(problems)} '
                        '(check --model, --model_depth and the model options)')
    return {name: np.ascontiguousarray(converted[name], dtype=np.float32) for name in expected}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='\n\n'.join(__doc__.split('\n\n')[:2]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', type=Path, help='PyTorch checkpoint (.pth) of the reference')
    parser.add_argument('dst', type=Path, help='Paddle state dict to write (.pdparams)')
    parser.add_argument('--model', choices=list(MODELS), default=None,
                        help="model family (default: from the checkpoint's arch)")
    parser.add_argument('--model_depth', type=int, default=None,
                        help="model depth (default: from the checkpoint's arch)")
    parser.add_argument('--n_input_channels', type=int, default=3, help='3 for rgb, 2 for flow')
    parser.add_argument('--conv1_t_size', type=int, default=7,
                        help='temporal kernel size of conv1')
    parser.add_argument('--conv1_t_stride', type=int, default=1, help='temporal stride of conv1')
    parser.add_argument('--no_max_pool', action='store_true', help='no max-pool after conv1')
    parser.add_argument('--resnet_shortcut', choices=['A', 'B'], default='B',
                        help='shortcut type of the ResNet families (A has no weights)')
    parser.add_argument('--resnet_widen_factor', type=float, default=1.0,
                        help='stage width factor of the ResNet families')
    parser.add_argument('--wide_resnet_k', type=int, default=2, help='widening of wideresnet')
    parser.add_argument('--resnext_cardinality', type=int, default=32,
                        help='groups of the resnext bottleneck')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    state_dict, arch = extract_state_dict(load_checkpoint(args.src), args.src)
    model_name, model_depth = parse_arch(arch, args.src, args.model, args.model_depth)
    head = 'classifier.weight' if model_name == 'densenet' else 'fc.weight'
    if head not in state_dict:
        raise UserError(f'{args.src} has no {head}: is it a {model_name} checkpoint?')
    n_classes = state_dict[head].shape[0]  # [n_classes, in_features]
    description = f'{model_name}-{model_depth} with {n_classes} classes'
    model = build_model(model_name, model_depth, n_classes, args)
    converted = convert_state_dict(state_dict, model, args.src, description)
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    paddle.save(converted, str(args.dst))
    print(f'{args.src} ({description}): {len(converted)} tensors written to {args.dst}')


if __name__ == '__main__':
    run_cli(main)
