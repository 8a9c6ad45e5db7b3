"""Fine-tune, validate and run inference with a 3D CNN: the toolkit's one entry point."""
import os
import sys

from utils import launched_world, set_cpu_math_env, with_huge_pages

if __name__ == '__main__' and with_huge_pages():
    # glibc reads its tunables at start: start again with huge pages for the activations
    # (utils.HUGE_PAGES); the environment variable set keeps this from happening twice
    command_line = sys.orig_argv[1:] if hasattr(sys, 'orig_argv') else sys.argv  # 3.10+, 3.9
    try:
        os.execv(sys.executable, [sys.executable, *command_line])
    except OSError:
        pass
# math threads = usable cores, MKL's fast path on AMD, a fixed mmap threshold
# (utils.set_cpu_math_env): before `import paddle`
set_cpu_math_env()
# one progress bar in a data-parallel run, the master's; tqdm reads this when it is imported
world = launched_world()
if world is not None and world[0] != 0:
    os.environ.setdefault('TQDM_DISABLE', '1')

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

warnings.filterwarnings('ignore', message='No ccache found')
warnings.filterwarnings('ignore', message='When training, we now always track global mean')

with contextlib.redirect_stderr(io.StringIO()):  # Paddle prints a caution for any thread count > 1
    import paddle  # noqa: E402
from tqdm import tqdm  # noqa: E402

# one line per warning, written around the progress bar (also from loader workers: tqdm's lock is
# shared with the processes forked from this one)
warnings.showwarning = lambda message, *args, **kwargs: tqdm.write(f'warning: {message}',
                                                                   file=sys.stderr)

import inference  # noqa: E402
from datasets import get_inference_data, get_training_data, get_validation_data  # noqa: E402
from model import (generate_model, get_fine_tuning_parameters,  # noqa: E402
                   load_pretrained_model)
from opts import parse_opts  # noqa: E402
from spatial_transforms import (CenterCrop, ColorJitter, Compose, MultiScaleCornerCrop,  # noqa: E402
                                Normalize, PickFirstChannels, RandomHorizontalFlip,
                                RandomResizedCrop, Resize, ScaleValue, ToTensor, get_mean_std)
from temporal_transforms import Compose as TemporalCompose  # noqa: E402
from temporal_transforms import (SlidingWindow, TemporalCenterCrop, TemporalEvenCrop,  # noqa: E402
                                 TemporalRandomCrop, TemporalSubsampling)
from training import train_epoch  # noqa: E402
from utils import (BestScores, Interrupted, LoaderErrors, Logger, StopSignals,  # noqa: E402
                   UserError, WorkerSeeder, average_batch_norm_stats, epoch_seed,
                   get_rng_state, open_writer, run_cli, set_rng_state, set_seed)
from validation import val_epoch  # noqa: E402

# Strengths of --colorjitter (the reference passes zeros, which makes its flag a no-op).
COLOR_JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)

# Disk space of a checkpoint per byte of the model's state dict: .pdparams holds the state dict,
# .pdopt a momentum buffer per trainable parameter (2x together); 3x leaves room for the logs.
CHECKPOINT_SIZE_FACTOR = 3


def get_opt(argv=None):
    """Parse and resolve the options, check their combinations, create the result folder."""
    opt = parse_opts(argv)
    for name in ('video_path', 'annotation_path', 'result_path'):
        if getattr(opt, name) is None:
            raise UserError(f'--{name} is required')
    if opt.root_path is not None:
        for name in ('video_path', 'annotation_path', 'result_path', 'resume_path',
                     'pretrain_path'):
            if getattr(opt, name) is not None:
                setattr(opt, name, opt.root_path.expanduser() / getattr(opt, name))
    if opt.pretrain_path is not None:
        if opt.n_pretrain_classes == 0:
            raise UserError('--pretrain_path needs --n_pretrain_classes (the number of classes '
                            'the weights were trained on, e.g. 1039)')
        opt.n_finetune_classes = opt.n_classes
        opt.n_classes = opt.n_pretrain_classes
    if opt.output_topk <= 0:
        opt.output_topk = opt.n_classes
    if opt.inference_batch_size == 0:
        opt.inference_batch_size = opt.batch_size
    if opt.lr_scheduler == 'plateau' and opt.no_val and not opt.no_train:
        raise UserError('--lr_scheduler plateau steps on the validation loss: drop --no_val')
    if opt.dampening != 0 and not opt.nesterov:
        raise UserError("--dampening: Paddle's momentum SGD has no dampening; use 0")
    if opt.input_type == 'flow' and opt.file_type == 'jpg':
        raise UserError('--input_type flow needs --file_type hdf5')
    if opt.batchnorm_sync and not opt.distributed:
        raise UserError('--batchnorm_sync needs --distributed (it syncs BatchNorm across '
                        'processes)')
    device = get_device(opt.no_cuda)
    if opt.amp and device == 'cpu':
        raise UserError("--amp needs a GPU: Paddle's mixed precision leaves CPU operations in "
                        'float32')
    if opt.amp == 'bfloat16' and not paddle.amp.is_bfloat16_supported():
        raise UserError('--amp bfloat16: this GPU has no bfloat16 support; use --amp (float16)')
    resolve_distributed(opt, argv, device)

    resolve_model_input(opt)
    opt.begin_epoch = 1

    try:  # also the check that the result folder is writable, before anything runs
        opt.result_path.mkdir(parents=True, exist_ok=True)
        if opt.is_master_node:
            with (opt.result_path / 'opts.json').open('w') as f:
                json.dump(vars(opt), f, default=str, indent=1)
    except OSError as e:
        raise UserError(f'cannot write to --result_path {opt.result_path}: {e}') from e
    return opt


def resolve_distributed(opt, argv, device: str, environ=os.environ) -> None:
    """Set `dist_rank`, `world_size` (the number of processes) and `is_master_node` (rank 0).

    The processes of a data-parallel run are paddle.distributed.launch's. `--distributed` without
    it starts launch in this process's place, one process per GPU, as the reference spawns one
    per GPU; `--world_size` and `--dist_url` become launch's `--nnodes` and `--master`.
    """
    world = launched_world(environ)
    if world is None:
        if opt.distributed:
            argv = sys.argv[1:] if argv is None else argv
            n_gpus = paddle.device.cuda.device_count() if device == 'gpu' else 0
            command = launch_command(opt, argv, n_gpus, environ)
            print('starting', ' '.join(command), flush=True)
            os.execv(command[0], command)
        opt.dist_rank, opt.world_size, opt.is_master_node = 0, 1, True
        return
    rank, size = world
    if size > 1 and not opt.distributed:
        raise UserError(f'paddle.distributed.launch started {size} processes: add --distributed '
                        '(without it each would train a model of its own)')
    nodes = int(environ.get('PADDLE_NNODES', 1))
    if opt.world_size > 1 and opt.world_size != nodes:
        raise UserError(f'--world_size {opt.world_size}, but paddle.distributed.launch started '
                        f'{nodes} node(s) (its --nnodes)')
    opt.dist_rank, opt.world_size, opt.is_master_node = rank, size, rank == 0


def launch_command(opt, argv, n_gpus: int, environ=os.environ) -> list:
    """The paddle.distributed.launch command that runs this one (`argv`) on `n_gpus` GPUs."""
    script = str(Path(__file__).resolve())
    if n_gpus == 0:
        raise UserError('--distributed: no GPU to start a process on; start the processes with '
                        'paddle.distributed.launch (gloo on CPU), e.g. python -m '
                        f'paddle.distributed.launch --nproc_per_node 2 {script} '
                        f'{" ".join(argv)}')
    command = [sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', str(n_gpus),
               '--log_dir', str(opt.result_path / 'log')]
    if opt.world_size > 1:
        master = re.fullmatch(r'(?:tcp://)?([^:/]+:\d+)/?', opt.dist_url)
        if master is None:
            raise UserError(f'--dist_url {opt.dist_url}: expected tcp://host:port')
        command += ['--nnodes', str(opt.world_size), '--master', master.group(1)]
        if 'OMPI_COMM_WORLD_RANK' in environ:  # started by mpirun, as the reference expects
            command += ['--rank', environ['OMPI_COMM_WORLD_RANK']]
    return command + [script] + list(argv)


def resolve_model_input(opt) -> None:
    """Set `arch`, `n_input_channels` (flow: 2) and the normalisation `mean`/`std` of the options."""
    opt.arch = f'{opt.model}-{opt.model_depth}'
    opt.n_input_channels = 2 if opt.input_type == 'flow' else 3
    mean, std = get_mean_std(opt.value_scale, dataset=opt.mean_dataset)
    opt.mean, opt.std = mean[:opt.n_input_channels], std[:opt.n_input_channels]


def get_normalize_method(mean, std, no_mean_norm: bool, no_std_norm: bool) -> Normalize:
    return Normalize([0.0] * len(mean) if no_mean_norm else mean,
                     [1.0] * len(std) if no_std_norm else std)


def get_spatial_transform(opt, crop: list, augment: list = ()) -> Compose:
    """crop + augmentation + ToTensor [+ first 2 channels for flow] + scale + normalize."""
    transform = list(crop) + list(augment) + [ToTensor()]
    if opt.input_type == 'flow':
        transform.append(PickFirstChannels(n=2))
    transform += [ScaleValue(opt.value_scale),
                  get_normalize_method(opt.mean, opt.std, opt.no_mean_norm, opt.no_std_norm)]
    return Compose(transform)


def get_temporal_transform(opt, last) -> TemporalCompose:
    transform = [TemporalSubsampling(opt.sample_t_stride)] if opt.sample_t_stride > 1 else []
    return TemporalCompose(transform + [last])


class RankShard(paddle.io.Sampler):
    """Indices rank, rank + world_size, ... of a dataset of `n` samples: one process's share of
    an evaluation, each sample seen once in all (no padding, unlike DistributedBatchSampler)."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = range(rank, n, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(dataset, batch_size: int, shuffle: bool, opt, collate_fn=None):
    """A `paddle.io.DataLoader` with `--n_threads` workers seeded per worker and epoch.

    With --distributed, each process loads its own shard: for training (`shuffle`) a
    DistributedBatchSampler whose order `set_epoch` draws anew, for evaluation a `RankShard`.
    """
    seeder = WorkerSeeder(opt.manual_seed)
    if not opt.distributed:
        sampling = dict(batch_size=batch_size, shuffle=shuffle)
    elif shuffle:
        sampling = dict(batch_sampler=paddle.io.DistributedBatchSampler(
            dataset, batch_size, num_replicas=opt.world_size, rank=opt.dist_rank, shuffle=True))
    else:
        sampling = dict(batch_sampler=paddle.io.BatchSampler(
            sampler=RankShard(len(dataset), opt.dist_rank, opt.world_size),
            batch_size=batch_size))
    loader = paddle.io.DataLoader(dataset, num_workers=opt.n_threads, collate_fn=collate_fn,
                                  worker_init_fn=seeder if opt.n_threads > 0 else None,
                                  **sampling)
    loader.seeder = seeder
    return loader


def get_train_utils(opt, parameters):
    """Training loader, logs, SGD and the learning-rate scheduler."""
    if opt.train_crop == 'random':
        crop = [RandomResizedCrop(opt.sample_size, (opt.train_crop_min_scale, 1.0),
                                  (opt.train_crop_min_ratio, 1.0 / opt.train_crop_min_ratio))]
    elif opt.train_crop == 'corner':
        scales = [2 ** (-i / 4) for i in range(5)]  # 1, 2^-1/4, ..., 2^-1
        crop = [MultiScaleCornerCrop(opt.sample_size, scales)]
    else:
        crop = [Resize(opt.sample_size), CenterCrop(opt.sample_size)]
    augment = [] if opt.no_hflip else [RandomHorizontalFlip()]
    if opt.colorjitter:
        augment.append(ColorJitter(**COLOR_JITTER))
    spatial_transform = get_spatial_transform(opt, crop, augment)
    t_crop = TemporalRandomCrop if opt.train_t_crop == 'random' else TemporalCenterCrop
    temporal_transform = get_temporal_transform(opt, t_crop(opt.sample_duration))

    train_data = get_training_data(opt.video_path, opt.annotation_path, opt.dataset,
                                   opt.input_type, opt.file_type, spatial_transform,
                                   temporal_transform, opt.strict_data)
    train_loader = make_loader(train_data, opt.batch_size, True, opt)

    train_logger = make_logger(opt, 'train.log', ['epoch', 'loss', 'acc', 'lr'])
    train_batch_logger = make_logger(opt, 'train_batch.log',
                                     ['epoch', 'batch', 'iter', 'loss', 'acc', 'lr'])

    if opt.lr_scheduler == 'plateau':
        scheduler = paddle.optimizer.lr.ReduceOnPlateau(opt.learning_rate, mode='min',
                                                        patience=opt.plateau_patience)
    else:
        scheduler = paddle.optimizer.lr.MultiStepDecay(opt.learning_rate,
                                                       opt.multistep_milestones)
    optimizer = paddle.optimizer.Momentum(learning_rate=scheduler, momentum=opt.momentum,
                                          parameters=parameters, use_nesterov=opt.nesterov,
                                          weight_decay=opt.weight_decay)
    return train_loader, train_logger, train_batch_logger, optimizer, scheduler


def get_val_utils(opt):
    """Validation loader (n_val_samples clips per video) and log."""
    crop = [Resize(opt.sample_size), CenterCrop(opt.sample_size)]
    spatial_transform = get_spatial_transform(opt, crop)
    temporal_transform = get_temporal_transform(
        opt, TemporalEvenCrop(opt.sample_duration, opt.n_val_samples))
    val_data, collate_fn = get_validation_data(opt.video_path, opt.annotation_path, opt.dataset,
                                               opt.input_type, opt.file_type, spatial_transform,
                                               temporal_transform, opt.strict_data)
    videos_per_batch = max(1, opt.batch_size // opt.n_val_samples)
    val_loader = make_loader(val_data, videos_per_batch, False, opt, collate_fn)
    return val_loader, make_logger(opt, 'val.log', ['epoch', 'loss', 'acc'])


def make_logger(opt, name: str, header: list):
    """The tsv log `name` in the result folder, written by the master process only (else None);
    a resumed run keeps the rows of the epochs before `begin_epoch`."""
    if not opt.is_master_node:
        return None
    return Logger(opt.result_path / name, header, append=opt.resume_path is not None,
                  drop_from_epoch=opt.begin_epoch)


def get_inference_utils(opt):
    """Inference loader (sliding-window clips of every video) and the class names."""
    crop = [Resize(opt.sample_size)]
    if opt.inference_crop == 'center':
        crop.append(CenterCrop(opt.sample_size))
    spatial_transform = get_spatial_transform(opt, crop)
    temporal_transform = get_temporal_transform(
        opt, SlidingWindow(opt.sample_duration, opt.inference_stride))
    data, collate_fn = get_inference_data(opt.video_path, opt.annotation_path, opt.dataset,
                                          opt.input_type, opt.file_type, opt.inference_subset,
                                          spatial_transform, temporal_transform, opt.strict_data)
    # Uncropped frames of different videos may differ in size: one video per batch.
    batch_size = 1 if opt.inference_crop == 'nocrop' else opt.inference_batch_size
    return make_loader(data, batch_size, False, opt, collate_fn), data.class_names


def structured_optimizer_state(model, state: dict, to_structured: bool) -> dict:
    """Rename optimizer accumulators between Paddle's unique parameter names and the model's
    structured names, so that a checkpoint loads into a model built in another process."""
    pairs = [(p.name, name) for name, p in model.named_parameters()]
    if not to_structured:
        pairs = [(structured, unique) for unique, structured in pairs]
    # longest first, so that no name is taken for the prefix of a longer one
    prefixes = sorted(((source + '_', target + '_') for source, target in pairs),
                      key=lambda pair: -len(pair[0]))
    renamed = {}
    for key, value in state.items():
        prefix = next(((s, t) for s, t in prefixes if key.startswith(s)), None)
        renamed[prefix[1] + key[len(prefix[0]):] if prefix else key] = value
    return renamed


def tmp_path(path: Path) -> Path:
    return path.with_name(path.name + '.tmp')


def fsync(path: Path) -> None:
    """Flush a file to the disk before it is renamed into place: some file systems report a full
    disk only then, and a rename after a power cut must not find it empty."""
    with path.open('rb') as f:
        os.fsync(f.fileno())


def save_checkpoint(result_path: Path, epoch: int, arch: str, model, optimizer, scheduler,
                    best: BestScores, scaler=None):
    """Write save_{epoch}.pdparams (weights) and save_{epoch}.pdopt (training state) atomically.

    Both go to .tmp files and are renamed into place when both are complete. The .pdopt marks a
    checkpoint complete (find_checkpoint), so an earlier save_{epoch}.pdopt is removed before the
    renames: at no moment do weights and state of two different writes pair up. A failed write
    (a full disk) or an interrupt leaves no .tmp file behind. `scaler`: --amp's GradScaler.
    """
    params, state = result_path / f'save_{epoch}.pdparams', result_path / f'save_{epoch}.pdopt'
    files = {
        params: model.state_dict(),
        state: {'epoch': epoch, 'arch': arch,
                'optimizer': structured_optimizer_state(model, optimizer.state_dict(), True),
                'scheduler': scheduler.state_dict(), 'best': dataclasses.asdict(best),
                'rng': get_rng_state()},
    }
    if scaler is not None:
        files[state]['scaler'] = scaler.state_dict()
    try:
        for path, obj in files.items():
            paddle.save(obj, str(tmp_path(path)))
            fsync(tmp_path(path))
        state.unlink(missing_ok=True)
        for path in files:
            os.replace(tmp_path(path), path)
    except OSError as e:
        raise UserError(f'cannot write checkpoint {params}: {e}; '
                        f'{resume_hint(result_path)}') from e
    finally:
        for path in files:
            tmp_path(path).unlink(missing_ok=True)


def remove_unfinished_checkpoints(result_path: Path) -> None:
    """Delete the .tmp files of a checkpoint write that a kill cut short."""
    unfinished = sorted(result_path.glob('save_*.tmp'))
    for path in unfinished:
        path.unlink()
    if unfinished:
        print(f'removed {", ".join(p.name for p in unfinished)}: unfinished checkpoint files '
              'of an interrupted run')


def check_free_space(result_path: Path, model) -> None:
    """Stop before training, not hours into it, when --result_path has no room for a checkpoint."""
    model_bytes = sum(int(t.numel()) * t.element_size() for t in model.state_dict().values())
    needed = CHECKPOINT_SIZE_FACTOR * model_bytes
    free = shutil.disk_usage(result_path).free
    if free < needed:
        raise UserError(f'--result_path {result_path} has {free / 2**20:.0f} MB free; a '
                        f'checkpoint needs about {needed / 2**20:.0f} MB')


def find_checkpoint(resume_path: Path) -> Path:
    """`save_N.pdparams`, `save_N` or a result folder (its newest complete checkpoint)."""
    path = Path(resume_path)
    if path.is_dir():
        epochs = [int(m.group(1)) for f in path.glob('save_*.pdparams')
                  if (m := re.fullmatch(r'save_(\d+)\.pdparams', f.name))
                  and f.with_suffix('.pdopt').exists()]
        if not epochs:
            raise UserError(f'--resume_path {path}: no save_N.pdparams with its .pdopt there')
        return path / f'save_{max(epochs)}.pdparams'
    if path.suffix == '.pdopt':
        path = path.with_suffix('.pdparams')
    if path.suffix != '.pdparams':
        path = path.with_name(path.name + '.pdparams')
    if not path.is_file():
        raise UserError(f'--resume_path: checkpoint not found: {path}')
    return path


def resume_hint(result_path: Path) -> str:
    """What a rerun can resume from: the newest complete checkpoint in `result_path`, or none."""
    try:
        checkpoint = find_checkpoint(result_path)
    except UserError:
        return f'no complete checkpoint in {result_path} to resume from'
    return f'resume from {checkpoint.name} with --resume_path {result_path}'


def load_checkpoint(path: Path, arch: str):
    """The weights and training state of a checkpoint made for `arch`."""
    pdopt = path.with_suffix('.pdopt')
    if not pdopt.is_file():
        raise UserError(f'--resume_path: {pdopt} is missing (it holds the epoch and optimizer)')
    state = paddle.load(str(pdopt))
    if state.get('arch') != arch:
        raise UserError(f'--resume_path {path} was saved by {state.get("arch")}, '
                        f'but the model is {arch}')
    return paddle.load(str(path)), state


def bad_frames_note(loader) -> str:
    """', bad frames replaced: N, videos skipped: M' for the epoch just loaded ('' if none)."""
    replaced, skipped = loader.dataset.bad_frames.take()
    notes = [f'{what}: {n}' for what, n in (('bad frames replaced', replaced),
                                            ('videos skipped', skipped)) if n]
    return ''.join(', ' + note for note in notes)


def get_device(no_cuda: bool) -> str:
    """'gpu' when Paddle has CUDA and a GPU is visible (and --no_cuda is not given), else 'cpu'."""
    if not no_cuda and paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return 'gpu'
    return 'cpu'


def sync_batch_norm(model, device: str):
    """--batchnorm_sync: SyncBatchNorm layers on GPU. Paddle has no CPU kernel for them: there
    the BatchNorm layers stay, and their running statistics are averaged every epoch."""
    if device == 'gpu':
        return paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    warnings.warn('--batchnorm_sync: Paddle has no SyncBatchNorm on CPU; training goes on with '
                  'BatchNorm per process (running statistics averaged across processes every '
                  'epoch)')
    return model


def main_worker(opt, stop: StopSignals):
    master = opt.is_master_node
    log = print if master else (lambda *args, **kwargs: None)
    tb_writer = open_writer(opt.result_path / 'vdl') if opt.tensorboard and master else None
    set_seed(opt.manual_seed)
    device = get_device(opt.no_cuda)
    paddle.set_device(device)
    if opt.distributed:
        paddle.distributed.init_parallel_env()  # on GPU, also selects this process's GPU

    model = generate_model(opt)
    if opt.pretrain_path:
        model = load_pretrained_model(model, opt.pretrain_path, opt.model,
                                      opt.n_finetune_classes)
    if opt.batchnorm_sync:
        model = sync_batch_norm(model, device)
    # as in the reference, --ft_begin_module applies to pretrained weights only
    parameters = get_fine_tuning_parameters(model, opt.ft_begin_module if opt.pretrain_path else '')
    n_params = sum(int(p.numel()) for p in parameters)
    log(f'model {opt.arch} on {paddle.device.get_device()}: {n_params:,} trainable parameters'
        + (f'; {opt.world_size} processes, batch {opt.batch_size} each' if opt.distributed
           else ''))

    train_state = None
    if opt.resume_path is not None:  # every process loads the same checkpoint
        checkpoint = find_checkpoint(opt.resume_path)
        weights, train_state = load_checkpoint(checkpoint, opt.arch)
        model.set_state_dict(weights)
        opt.begin_epoch = train_state['epoch'] + 1
        log(f'resuming from {checkpoint} at epoch {opt.begin_epoch}')
    best = BestScores(**train_state.get('best', {})) if train_state else BestScores()

    if not opt.no_train:
        if master:
            remove_unfinished_checkpoints(opt.result_path)
            check_free_space(opt.result_path, model)
        (train_loader, train_logger, train_batch_logger, optimizer,
         scheduler) = get_train_utils(opt, parameters)
        # float16 needs loss scaling; bfloat16 has float32's range
        scaler = paddle.amp.GradScaler() if opt.amp == 'float16' else None
        if train_state is not None:
            optimizer.set_state_dict(
                structured_optimizer_state(model, train_state['optimizer'], False))
            scheduler.set_state_dict(train_state['scheduler'])
            if opt.overwrite_milestones and opt.lr_scheduler == 'multistep':
                scheduler.milestones = opt.multistep_milestones
            if scaler is not None and train_state.get('scaler'):
                scaler.load_state_dict(train_state['scaler'])
        # DataParallel averages the gradients over the processes in backward
        train_model = paddle.DataParallel(model) if opt.distributed else model
    if not opt.no_val:
        val_loader, val_logger = get_val_utils(opt)
    if train_state is not None and 'rng' in train_state:
        # where the interrupted run left them (each epoch then reseeds from (seed, epoch))
        set_rng_state(train_state['rng'])

    for epoch in range(opt.begin_epoch, opt.n_epochs + 1):
        if opt.no_train and opt.no_val:
            break
        summary = [f'epoch {epoch}/{opt.n_epochs}']
        if not opt.no_train:
            seed = epoch_seed(opt.manual_seed, epoch, opt.dist_rank)
            set_seed(seed)
            train_loader.seeder.seed = seed
            if opt.distributed:  # one order for all processes, a shard of it each
                train_loader.batch_sampler.set_epoch(epoch_seed(opt.manual_seed, epoch) % 2**32)
            lr = optimizer.get_lr()
            loss, acc, seconds = train_epoch(epoch, stop.watch(train_loader, opt.distributed),
                                             train_model, optimizer, lr, train_logger,
                                             train_batch_logger, tb_writer, opt.amp, scaler)
            if opt.distributed:
                average_batch_norm_stats(model)
            summary.append(f'train loss {loss:.4f} acc {acc:.3f} lr {lr:g} ({seconds:.0f} s'
                           f'{bad_frames_note(train_loader)})')
        if not opt.no_val:
            val_loss, val_acc, seconds = val_epoch(epoch, stop.watch(val_loader), model,
                                                   val_logger, tb_writer)
            best.update(epoch, val_loss, val_acc)
            summary.append(f'val loss {val_loss:.4f} acc {val_acc:.3f} ({seconds:.0f} s'
                           f'{bad_frames_note(val_loader)})')
        if not opt.no_train:
            if opt.lr_scheduler == 'plateau':
                scheduler.step(val_loss)  # the loss of all processes: the same step in each
            else:
                scheduler.step()
            # last in the epoch: a resumed run starts from the stepped scheduler and the scores
            # of this epoch's validation, as the uninterrupted run does
            if epoch % opt.checkpoint == 0 and master:
                save_checkpoint(opt.result_path, epoch, opt.arch, model, optimizer, scheduler,
                                best, scaler)
        if master:
            tqdm.write('  '.join(summary))
    if tb_writer is not None:
        tb_writer.close()
    if best.acc_epoch:
        log(best)

    if opt.inference:
        inference_loader, class_names = get_inference_utils(opt)
        result_path = opt.result_path / f'{opt.inference_subset}.json'
        results = inference.inference(stop.watch(inference_loader), model,
                                      result_path if master else None, class_names,
                                      opt.inference_no_average, opt.output_topk,
                                      backend=opt.inference_backend)
        log(f'inference: {len(results["results"])} {opt.inference_subset} videos -> '
            f'{result_path}')


def main(argv=None):
    opt = get_opt(argv)
    with StopSignals(repeat_raises=not opt.distributed) as stop:
        try:
            with LoaderErrors():
                main_worker(opt, stop)
        except (Exception, Interrupted) as e:
            if stop.signum is not None:
                # What fails after SIGINT/SIGTERM fails because of it: the data loader, for one,
                # when a kill of the whole process group has ended its workers.
                raise Interrupted(stop.signum,
                                  f'interrupted by {signal.Signals(stop.signum).name}; '
                                  f'{resume_hint(opt.result_path)}') from None
            if opt.distributed and is_lost_peer(e):
                # launch stops the processes one by one: the last ones see the first ones gone
                raise UserError(f'process {opt.dist_rank} lost the other processes of the run '
                                f'({str(e).strip().splitlines()[0]}); the log of the one that '
                                "stopped first (in launch's --log_dir) says why") from None
            raise


def is_lost_peer(error: BaseException) -> bool:
    """Whether `error` is a collective operation's failure (gloo, NCCL) on losing a process."""
    return isinstance(error, RuntimeError) and bool(
        re.search(r'gloo|nccl|connection (closed|reset)', str(error), re.IGNORECASE))


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
