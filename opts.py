"""Command-line options: the reference's names and defaults."""
import argparse
from pathlib import Path

from spatial_transforms import get_mean_std


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {value}')
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be >= 0, got {value}')
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be > 0, got {value}')
    return value


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description='Train, validate and run inference with 3D CNNs for action recognition.')

    g = p.add_argument_group('paths')
    g.add_argument('--root_path', default=None, type=Path,
                   help='Root directory; prefixes the video, annotation, result, resume and '
                        'pretrain paths')
    g.add_argument('--video_path', default=None, type=Path,
                   help='Directory of videos (class/video_id/image_00001.jpg ...)')
    g.add_argument('--annotation_path', default=None, type=Path, help='Annotation json')
    g.add_argument('--result_path', default=None, type=Path,
                   help='Result directory (created if missing)')
    g.add_argument('--resume_path', default=None, type=Path,
                   help='Checkpoint to resume from: save_N.pdparams (its save_N.pdopt beside '
                        'it) or a result directory (its newest checkpoint)')
    g.add_argument('--pretrain_path', default=None, type=Path,
                   help='Pretrained weights (.pdparams; the extension may be left out)')

    g = p.add_argument_group('data')
    g.add_argument('--dataset', default='kinetics',
                   choices=['kinetics', 'activitynet', 'ucf101', 'hmdb51', 'mit'],
                   help='Dataset name')
    g.add_argument('--n_classes', default=400, type=positive_int,
                   help='Number of classes (activitynet: 200, kinetics: 400, 600 or 700, '
                        'ucf101: 101, hmdb51: 51)')
    g.add_argument('--n_pretrain_classes', default=0, type=non_negative_int,
                   help='Number of classes of the pretrained weights (required with '
                        '--pretrain_path; 1039 for Kinetics-700 + Moments in Time)')
    g.add_argument('--ft_begin_module', default='', type=str,
                   help='First module to fine-tune (conv1, layer1, ..., fc; denseblock1, '
                        'classifier, ...); modules before it are frozen. Empty: all')
    g.add_argument('--sample_size', default=112, type=positive_int,
                   help='Height and width of inputs')
    g.add_argument('--sample_duration', default=16, type=positive_int,
                   help='Temporal duration of inputs (frames)')
    g.add_argument('--sample_t_stride', default=1, type=positive_int,
                   help='If larger than 1, input frames are subsampled with this stride')
    g.add_argument('--train_crop', default='random', choices=['random', 'corner', 'center'],
                   help='Spatial crop in training: random (random resized crop), corner '
                        '(4 corners + center, 5 scales), center')
    g.add_argument('--train_crop_min_scale', default=0.25, type=positive_float,
                   help='Min area scale of the random crop in training')
    g.add_argument('--train_crop_min_ratio', default=0.75, type=positive_float,
                   help='Min aspect ratio of the random crop in training')
    g.add_argument('--no_hflip', action='store_true', help='No horizontal flip in training')
    g.add_argument('--colorjitter', action='store_true', help='Color jitter in training')
    g.add_argument('--train_t_crop', default='random', choices=['random', 'center'],
                   help='Temporal crop in training')
    g.add_argument('--mean_dataset', default='kinetics', choices=['activitynet', 'kinetics', '0.5'],
                   help='Dataset whose mean and std normalise the inputs')
    g.add_argument('--no_mean_norm', action='store_true', help='Do not subtract the mean')
    g.add_argument('--no_std_norm', action='store_true', help='Do not divide by the std')
    g.add_argument('--value_scale', default=1, type=positive_int,
                   help='1: inputs in [0, 1]; 255: inputs in [0, 255]')
    g.add_argument('--input_type', default='rgb', choices=['rgb', 'flow'], help='Input type')
    g.add_argument('--file_type', default='jpg', choices=['jpg', 'hdf5', 'video'],
                   help='Frame storage: jpg folders <label>/<video_id>/image_00001.jpg, hdf5 '
                        'files <label>/<video_id>.hdf5, or video files <label>/<video_id>.avi, '
                        '.mp4, ... decoded with PyAV (pip install av; frames as '
                        'generate_video_jpgs writes them, shorter side 240)')
    g.add_argument('--source_weights', default=None, type=positive_float, nargs='+',
                   metavar='W',
                   help='Merged annotations (util_scripts.merge_json): a weight per source, in '
                        'its order; each training epoch has as many clips as videos, source s '
                        'a share W_s / sum(W) of them (a small source repeated, a large one '
                        'subsampled, anew each epoch). Default: every video once per epoch')
    g.add_argument('--strict_data', action='store_true',
                   help='Stop at the first missing or corrupt frame (default: replace it by '
                        'the nearest readable frame of its video, skip a video without any, '
                        'warn once per video and count them in the epoch summary)')

    g = p.add_argument_group('optimisation')
    g.add_argument('--learning_rate', default=0.1, type=positive_float,
                   help='Initial learning rate (divided by 10 by the scheduler)')
    g.add_argument('--momentum', default=0.9, type=float, help='Momentum')
    g.add_argument('--dampening', default=0.0, type=float,
                   help='Dampening of SGD (Paddle supports 0 only)')
    g.add_argument('--weight_decay', default=1e-3, type=float, help='Weight decay')
    g.add_argument('--nesterov', action='store_true', help='Nesterov momentum')
    g.add_argument('--optimizer', default='sgd', choices=['sgd'], help='Optimizer (SGD only)')
    g.add_argument('--lr_scheduler', default='multistep', choices=['multistep', 'plateau'],
                   help='Learning-rate scheduler, stepped once per epoch')
    g.add_argument('--multistep_milestones', default=[50, 100, 150], type=positive_int,
                   nargs='+', help='Epochs at which multistep divides the learning rate by 10')
    g.add_argument('--overwrite_milestones', action='store_true',
                   help='When resuming, use --multistep_milestones instead of the saved ones')
    g.add_argument('--plateau_patience', default=10, type=non_negative_int,
                   help='Epochs without val-loss improvement before plateau reduces the lr')
    g.add_argument('--batch_size', default=128, type=positive_int,
                   help='Clips per training step, per process with --distributed')
    g.add_argument('--inference_batch_size', default=0, type=non_negative_int,
                   help='Videos per inference batch; 0 means --batch_size')
    g.add_argument('--batchnorm_sync', action='store_true',
                   help='SyncBatchNorm in distributed training (GPU; on CPU plain BatchNorm '
                        'whose statistics are averaged across processes every epoch)')
    g.add_argument('--amp', nargs='?', const='float16', default=None,
                   choices=['float16', 'bfloat16'],
                   help='Mixed precision: --amp is float16 with loss scaling (GPU), --amp '
                        'bfloat16 where the GPU or the CPU (avx512_bf16, amx_bf16) has it')
    g.add_argument('--n_epochs', default=200, type=positive_int,
                   help='Number of total epochs to run')
    g.add_argument('--n_val_samples', default=3, type=positive_int,
                   help='Clips per validation video')

    g = p.add_argument_group('run control')
    g.add_argument('--no_train', action='store_true', help='Skip training')
    g.add_argument('--no_val', action='store_true', help='Skip validation')
    g.add_argument('--inference', action='store_true',
                   help='Run inference on --inference_subset after training')
    g.add_argument('--inference_subset', default='val', choices=['train', 'val', 'test'],
                   help='Subset used in inference')
    g.add_argument('--inference_stride', default=16, type=positive_int,
                   help='Stride of the sliding window in inference')
    g.add_argument('--inference_crop', default='center', choices=['center', 'nocrop'],
                   help='Crop in inference; nocrop runs fully convolutional on the resized '
                        'frames, one video per batch')
    g.add_argument('--inference_no_average', action='store_true',
                   help='Write per-clip results instead of the video average')
    g.add_argument('--inference_backend', default='auto', choices=['auto', 'onednn', 'dygraph'],
                   help='auto: on CPU a Paddle Inference predictor with oneDNN (1.5-3 s to '
                        'build), except for models that run channels-last on oneDNN in dygraph '
                        '(ResNets: as fast per clip), dygraph on GPU; onednn: the predictor or '
                        'an error; dygraph: the plain model')
    g.add_argument('--no_cuda', action='store_true', help='Run on the CPU even if a GPU exists')
    g.add_argument('--n_threads', default=4, type=non_negative_int,
                   help='Data-loader worker processes (0: load in the main process)')
    g.add_argument('--checkpoint', default=10, type=positive_int,
                   help='Save a checkpoint every this many epochs')
    g.add_argument('--manual_seed', default=1, type=int, help='Random seed')
    g.add_argument('--output_topk', default=5, type=int,
                   help='Top-k scores written per video; <= 0 means all classes')
    g.add_argument('--tensorboard', action='store_true',
                   help='Write VisualDL scalars under result_path/vdl (pip install visualdl)')
    g.add_argument('--distributed', action='store_true',
                   help='Data-parallel training and inference over the processes started by '
                        'python -m paddle.distributed.launch (without it: one process per GPU)')
    g.add_argument('--dist_url', default='tcp://127.0.0.1:23456', type=str,
                   help="Without paddle.distributed.launch: the master node's address, passed "
                        "to launch as --master")
    g.add_argument('--world_size', default=-1, type=int,
                   help='Number of nodes (launch --nnodes); <= 1 means this node only')
    g.add_argument('--accimage', action='store_true',
                   help='Accepted for compatibility; frames are always decoded with Pillow')

    g = p.add_argument_group('model')
    g.add_argument('--model', default='resnet',
                   choices=['resnet', 'resnet2p1d', 'preresnet', 'wideresnet', 'resnext',
                            'densenet'],
                   help='Model family')
    g.add_argument('--model_depth', default=18, type=positive_int,
                   help='Depth (resnet: 10, 18, 34, 50, 101, 152, 200)')
    g.add_argument('--conv1_t_size', default=7, type=positive_int,
                   help='Kernel size in t dim of conv1')
    g.add_argument('--conv1_t_stride', default=1, type=positive_int,
                   help='Stride in t dim of conv1')
    g.add_argument('--no_max_pool', action='store_true',
                   help='Remove the max pooling after conv1')
    g.add_argument('--resnet_shortcut', default='B', choices=['A', 'B'],
                   help='Shortcut type of resnet')
    g.add_argument('--resnet_widen_factor', default=1.0, type=positive_float,
                   help='Multiplies the number of feature maps of resnet')
    g.add_argument('--wide_resnet_k', default=2, type=positive_int, help='Wide resnet k')
    g.add_argument('--resnext_cardinality', default=32, type=positive_int,
                   help='ResNeXt cardinality')
    return p


def parse_opts(argv=None) -> argparse.Namespace:
    """Parse the command line (`argv`, default sys.argv[1:])."""
    return get_parser().parse_args(argv)


def resolve_model_input(opt) -> None:
    """Set `arch`, `n_input_channels` (flow: 2)
    and the normalisation `mean`/`std` of the options."""
    opt.arch = f'{opt.model}-{opt.model_depth}'
    opt.n_input_channels = 2 if opt.input_type == 'flow' else 3
    mean, std = get_mean_std(opt.value_scale, dataset=opt.mean_dataset)
    opt.mean, opt.std = mean[:opt.n_input_channels], std[:opt.n_input_channels]
