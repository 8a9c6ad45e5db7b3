"""Export a trained model for deployment: a static graph with a fixed clip shape, and a json of
its class names and preprocessing.

    python -m util_scripts.export_model --model resnet --model_depth 50 --n_classes 101 \\
        --annotation_path data/UCF_json/ucf101_01.json --weights results/save_20.pdparams \\
        --output exported/r3d50
    python -m util_scripts.export_model --opts results/opts.json \\
        --weights results/save_20.pdparams --output exported/r3d50

Writes into the --output folder:

    inference.json (Paddle 3) or inference.pdmodel (2.6), inference.pdiparams
        `paddle.jit.save` of the eval model, BN folded into the convolutions; input `x`
        [N, C, sample_duration, sample_size, sample_size] float32 with a free N, output the
        logits [N, n_classes]
    model_info.json
        `class_names` (index order) and the preprocessing of one frame: shorter side resized to
        `sample_size` (bilinear), center crop `sample_size`, RGB / 255 * `value_scale`, minus
        `mean`, divided by `std`; clips of `sample_duration` frames (every `sample_t_stride`-th)
        starting every `inference_stride` frames

The model and input options are main.py's (`python main.py -h`); `--opts RUN/opts.json` takes
them from a training run (options given here win). The class names are the `labels` of the
annotation json: `--annotation_path`, or the one opts.json names.
"""
import argparse
import json
from pathlib import Path
from typing import List, Optional, Sequence

import environment

environment.setup()  # before Paddle is imported

import numpy as np
import paddle

from datasets.annotation import read_labels
from inference import fold_batch_norm, quiet_native_stderr
from model import check_state_dict, classifier_name, generate_model, load_state_dict
from opts import get_parser, resolve_model_input
from spatial_transforms import get_normalize_method
from utils import UserError, run_cli

PROGRAM_PREFIX = 'inference'  # inference.json / .pdmodel + inference.pdiparams
INFO_FILE = 'model_info.json'
MODEL_OPTIONS = ('--model, --model_depth, --n_classes, --resnet_shortcut, --resnet_widen_factor, '
                 '--wide_resnet_k, --resnext_cardinality, --conv1_t_size, --conv1_t_stride, '
                 '--no_max_pool, --sample_size, --sample_duration, --sample_t_stride, '
                 '--inference_stride, --input_type, --mean_dataset, --value_scale, '
                 '--no_mean_norm, --no_std_norm')


def read_run_opts(path: Path) -> dict:
    """The options saved in a run's opts.json, with `n_classes` the number the weights have
    (a fine-tuning run stores the pretrained count there and its own in `n_finetune_classes`)."""
    try:
        saved = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise UserError(f'--opts: {path} not found') from e
    except json.JSONDecodeError as e:
        raise UserError(f'--opts: {path} is not valid json: {e}') from e
    if not isinstance(saved, dict) or 'model' not in saved:
        raise UserError(f'--opts: {path} is not the opts.json of a main.py run')
    if saved.get('n_finetune_classes'):
        saved['n_classes'] = saved['n_finetune_classes']
    return saved


def parse_model_opts(argv: Sequence[str], opts_path: Optional[Path],
                     prog: str) -> argparse.Namespace:
    """main.py's options from `argv`, with the defaults of a run's opts.json when given."""
    parser = get_parser()
    parser.prog = prog
    if opts_path is not None:
        known = {action.dest for action in parser._actions}
        # root_path is already joined into the saved paths
        parser.set_defaults(**{key: value for key, value in read_run_opts(opts_path).items()
                               if key in known and key != 'root_path'})
    opt = parser.parse_args(argv)
    resolve_model_input(opt)
    return opt


def read_class_names(annotation_path: Optional[Path], n_classes: int, source: str) -> List[str]:
    """The `labels` of an annotation json; `source` says where its path came from."""
    if annotation_path is None:
        raise UserError('class names: pass --annotation_path (the annotation json of the training '
                        'run; its "labels" are the class names) or --opts RUN/opts.json')
    if not Path(annotation_path).is_file():
        raise UserError(f'class names: {source} {annotation_path} not found')
    labels = read_labels(annotation_path)
    if len(labels) != n_classes:
        raise UserError(f'class names: {source} {annotation_path} has {len(labels)} labels, '
                        f'but the model has {n_classes} classes (--n_classes)')
    return labels


def class_names_of(opt: argparse.Namespace, annotation_path: Optional[Path],
                   opts_path: Optional[Path]) -> List[str]:
    """Class names from --annotation_path, else from the annotation json opts.json names (which
    parse_model_opts put into `opt.annotation_path`)."""
    if annotation_path is not None:
        return read_class_names(annotation_path, opt.n_classes, '--annotation_path')
    return read_class_names(opt.annotation_path, opt.n_classes,
                            f'the annotation json of {opts_path}')


def load_weights(model: paddle.nn.Layer, weights: Path, opt: argparse.Namespace) -> None:
    """Load a state dict into `model`; a checkpoint of another class count is named as such."""
    state = load_state_dict(weights)
    head = f'{classifier_name(opt.model)}.weight'  # [in_features, n_classes]
    shape = np.shape(state.get(head, ()))
    if len(shape) == 2 and shape[1] != opt.n_classes:
        raise UserError(f'{weights} is a checkpoint of {shape[1]} classes ({head} {list(shape)}), '
                        f'but the model has {opt.n_classes} (--n_classes or opts.json)')
    check_state_dict(model, state, weights)
    model.set_state_dict(state)


def build_model(opt: argparse.Namespace, weights: Path) -> paddle.nn.Layer:
    """The eval-mode model of `opt` with its trained weights."""
    model = generate_model(opt)
    load_weights(model, weights, opt)
    model.eval()
    return model


def input_shape(opt: argparse.Namespace) -> List[Optional[int]]:
    """[N, C, T, H, W] of the model's input; N (None) is free."""
    return [None, opt.n_input_channels, opt.sample_duration, opt.sample_size, opt.sample_size]


def model_info(opt: argparse.Namespace, class_names: List[str], weights: Path) -> dict:
    """Class names and preprocessing as model_info.json holds them (see the module docstring)."""
    normalize = get_normalize_method(opt.mean, opt.std, opt.no_mean_norm, opt.no_std_norm)
    return {
        'arch': opt.arch,
        'weights': str(weights),
        'class_names': list(class_names),
        'input_shape': input_shape(opt),
        'input_type': opt.input_type,
        'sample_size': opt.sample_size,
        'sample_duration': opt.sample_duration,
        'sample_t_stride': opt.sample_t_stride,
        'inference_stride': opt.inference_stride,
        'value_scale': opt.value_scale,
        'mean': normalize.mean,
        'std': normalize.std,
    }


def random_clip(shape: List[Optional[int]]) -> np.ndarray:
    """One random clip [1, C, T, H, W] of the input `shape`: the sample that BN folding checks
    its result on."""
    return np.random.default_rng(0).normal(size=[1] + shape[1:]).astype('float32')


def export(model: paddle.nn.Layer, shape: List[Optional[int]], output: Path) -> Path:
    """`paddle.jit.save` of `model` (BN folded) with input `x` of `shape`; returns the prefix."""
    model = fold_batch_norm(model, random_clip(shape))
    output.mkdir(parents=True, exist_ok=True)
    prefix = output / PROGRAM_PREFIX
    for stale in output.glob(f'{PROGRAM_PREFIX}.*'):  # e.g. a .pdmodel beside a new .json
        stale.unlink()
    with quiet_native_stderr():
        paddle.jit.save(model, str(prefix),
                        input_spec=[paddle.static.InputSpec(shape, 'float32', 'x')])
    return prefix


def parse_args(argv=None):
    """(the script's own arguments, main.py's model and input options)."""
    parser = argparse.ArgumentParser(
        prog='python -m util_scripts.export_model',
        description='Export a trained model (paddle.jit.save) with its class names and '
                    'preprocessing.',
        epilog=f'Model and input options are main.py\'s: {MODEL_OPTIONS}.')
    parser.add_argument('--weights', type=Path, required=True,
                        help='trained weights (.pdparams, e.g. results/save_20.pdparams)')
    parser.add_argument('--output', type=Path, required=True,
                        help='folder to write the exported model and model_info.json into')
    parser.add_argument('--opts', type=Path, default=None,
                        help="a run's opts.json: its model and input options (and annotation "
                             'json) are the defaults')
    parser.add_argument('--annotation_path', type=Path, default=None,
                        help='annotation json whose "labels" are the class names '
                             '(default: the one of --opts)')
    args, rest = parser.parse_known_args(argv)
    return args, parse_model_opts(rest, args.opts, parser.prog)


def main(argv=None) -> None:
    args, opt = parse_args(argv)
    class_names = class_names_of(opt, args.annotation_path, args.opts)
    paddle.set_device('cpu')  # the saved program runs on either device
    prefix = export(build_model(opt, args.weights), input_shape(opt), args.output)
    info = model_info(opt, class_names, args.weights)
    (args.output / INFO_FILE).write_text(json.dumps(info, indent=1))
    print(f'{args.weights} ({opt.arch}, {opt.n_classes} classes, input '
          f'{info["input_shape"]}) -> {prefix}.*, {args.output / INFO_FILE}')


if __name__ == '__main__':
    run_cli(main)
