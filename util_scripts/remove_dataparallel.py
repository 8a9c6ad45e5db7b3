"""Strip the `module.` prefix torch.nn.DataParallel gives a checkpoint's state dict keys (the
reference's util_scripts/remove_dataparallel.py).

    python -m util_scripts.remove_dataparallel SRC [DST]
    python -m util_scripts.remove_dataparallel SRC --dst_file_path DST   (the reference's spelling)

SRC is a PyTorch checkpoint (`.pth`): `{'epoch', 'arch', 'state_dict', ...}` as the reference
saves it, or a bare state dict. Its keys `module.conv1.weight`, ... become `conv1.weight`, ...;
everything else is kept. Without DST, SRC is rewritten in place, as the reference does (through a
temporary file, so an interrupted run leaves SRC whole). Keys without the prefix are kept as they
are (the reference cut the first dotted part off every key, whatever it was). Rewriting a `.pth`
needs PyTorch; the file is read with `weights_only` (tensors and plain containers: nothing in it
runs). A Paddle state dict (`.pdparams`) whose keys carry the prefix is rewritten with Paddle.

This project does not need the step: convert_pytorch_weights, --pretrain_path and export_model
strip `module.` when they read weights. It is for PyTorch code, such as the reference's, that
loads the weights into a model that is not wrapped in DataParallel.
"""
import argparse
import os
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence, Tuple

from utils import UserError, run_cli

PREFIX = 'module.'


def strip_prefix(state_dict: dict) -> Tuple[OrderedDict, int]:
    """(the state dict with `module.` cut off its keys, how many keys had it)."""
    stripped, origin = OrderedDict(), {}
    for key, value in state_dict.items():
        new_key = key[len(PREFIX):] if isinstance(key, str) and key.startswith(PREFIX) else key
        if new_key in origin:
            first, second = sorted([origin[new_key], key], key=len, reverse=True)
            raise UserError(f'both {first} and {second} are in the state dict: stripping '
                            f'{PREFIX!r} would merge them')
        stripped[new_key], origin[new_key] = value, key
    return stripped, sum(isinstance(k, str) and k.startswith(PREFIX) for k in state_dict)


def state_dict_of(checkpoint, path: Path) -> Tuple[dict, bool]:
    """(the state dict, whether it is the checkpoint's "state_dict" entry)."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('state_dict'), dict):
        return checkpoint['state_dict'], True
    if isinstance(checkpoint, dict) and checkpoint and all(isinstance(k, str) for k in checkpoint):
        return checkpoint, False
    raise UserError(f'{path} holds neither a state dict nor a checkpoint with "state_dict"')


def torch_io():
    """(load, save) of PyTorch checkpoints."""
    try:
        import torch
    except ImportError as e:
        raise UserError('rewriting a PyTorch checkpoint needs PyTorch: pip install torch (to use '
                        'it here, convert_pytorch_weights strips module. without PyTorch)') from e

    def load(path: Path):
        return torch.load(str(path), map_location='cpu', weights_only=True)

    def save(obj, path: Path):
        torch.save(obj, str(path))
    return load, save


def paddle_io():
    """(load, save) of Paddle state dicts."""
    import environment
    environment.setup()  # before Paddle is imported
    import paddle

    def load(path: Path):
        return paddle.load(str(path))

    def save(obj, path: Path):
        paddle.save(obj, str(path))
    return load, save


def remove_dataparallel(src: Path, dst: Path) -> int:
    """Write `src` with `module.` stripped from its state dict keys to `dst` (which may be
    `src`); returns the number of keys stripped. Nothing is written in place when none is."""
    if not src.is_file():
        raise UserError(f'{src} not found')
    load, save = paddle_io() if src.suffix == '.pdparams' else torch_io()
    try:
        checkpoint = load(src)
    except Exception as e:  # torch.load and paddle.load raise many types on foreign files
        kind = 'Paddle state dict' if src.suffix == '.pdparams' else 'PyTorch checkpoint'
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f'{src} cannot be read as a {kind}: {message}') from e
    state_dict, nested = state_dict_of(checkpoint, src)
    stripped, n_stripped = strip_prefix(state_dict)
    if n_stripped == 0 and dst.resolve() == src.resolve():
        return 0
    if nested:
        checkpoint['state_dict'] = stripped
    else:
        checkpoint = stripped
    dst.parent.mkdir(parents=True, exist_ok=True)
    if n_stripped == 0:
        shutil.copyfile(src, dst)  # unchanged: the very same file
        return 0
    tmp = dst.with_name(dst.name + '.tmp')
    try:
        save(checkpoint, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n_stripped


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m util_scripts.remove_dataparallel',
        description="Strip DataParallel's module. prefix from a checkpoint's state dict keys.")
    parser.add_argument('src', type=Path, metavar='SRC', help='checkpoint (.pth, or .pdparams)')
    parser.add_argument('dst', type=Path, nargs='?', metavar='DST',
                        help='where to write the result (default: SRC, rewritten in place)')
    parser.add_argument('--dst_file_path', type=Path, default=None, help='same as DST')
    args = parser.parse_args(argv)
    if args.dst and args.dst_file_path and args.dst != args.dst_file_path:
        parser.error(f'DST given twice: {args.dst} and --dst_file_path {args.dst_file_path}')
    args.dst = args.dst or args.dst_file_path or args.src
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    n_stripped = remove_dataparallel(args.src, args.dst)
    if n_stripped:
        print(f'{args.src}: {PREFIX!r} stripped from {n_stripped} keys -> {args.dst}')
    elif args.dst.resolve() == args.src.resolve():
        print(f'{args.src}: no key starts with {PREFIX!r}; left as it is')
    else:
        print(f'{args.src}: no key starts with {PREFIX!r}; copied unchanged to {args.dst}')
    return n_stripped


if __name__ == '__main__':
    run_cli(main)
