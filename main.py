"""Fine-tune, validate and run inference with a 3D CNN: the toolkit's one entry point."""
import environment

environment.setup()  # before anything imports Paddle: math threads, allocator

import json
import signal
import sys

import numpy as np
import paddle
from tqdm import tqdm

import inference
from checkpoints import (check_free_space, load_checkpoint, remove_unfinished_checkpoints,
                         restore_training_state, resume_hint, save_checkpoint)
from datasets import get_inference_data, get_training_data, get_validation_data
from datasets.data_loader import make_data_loader
from distributed import (average_batch_norm_stats, init_distributed, is_lost_peer,
                         resolve_distributed, sync_batch_norm)
from model import (check_state_dict, generate_model, get_device, get_fine_tuning_parameters,
                   load_pretrained_model)
from opts import parse_opts, resolve_model_input
from spatial_transforms import (get_inference_spatial_transform,
                                get_train_spatial_transform, get_val_spatial_transform)
from temporal_transforms import (SlidingWindow, TemporalCenterCrop, TemporalEvenCrop,
                                 TemporalRandomCrop, get_temporal_transform)
from training import check_amp, make_grad_scaler, train_epoch
from utils import (Interrupted, LoaderErrors, Logger, StopSignals, UserError,
                   epoch_seed, open_writer, run_cli, set_seed)
from validation import val_epoch, with_clip_counts


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
    if opt.input_type == 'flow' and opt.file_type != 'hdf5':
        raise UserError('--input_type flow needs --file_type hdf5')
    if opt.batchnorm_sync and not opt.distributed:
        raise UserError('--batchnorm_sync needs --distributed (it syncs BatchNorm across '
                        'processes)')
    device = get_device(opt.no_cuda)
    check_amp(opt.amp, device)
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


def get_train_utils(opt, parameters):
    """Training loader, logs, SGD and the learning-rate scheduler."""
    spatial_transform = get_train_spatial_transform(opt)
    t_crop = TemporalRandomCrop if opt.train_t_crop == 'random' else TemporalCenterCrop
    temporal_transform = get_temporal_transform(opt, t_crop(opt.sample_duration))
    train_data = get_training_data(opt.video_path, opt.annotation_path, opt.dataset,
                                   opt.input_type, opt.file_type, spatial_transform,
                                   temporal_transform, opt.strict_data)
    check_class_count(opt, train_data)
    train_loader = make_data_loader(train_data, opt.batch_size, True, opt)

    train_logger = make_logger(opt, 'train.log', ['epoch', 'loss', 'acc', 'lr'])
    train_batch_logger = make_logger(opt, 'train_batch.log', ['epoch', 'batch', 'iter', 'loss',
                                                              'acc', 'lr', 'data_time',
                                                              'batch_time'])

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


def check_class_count(opt, data) -> None:
    """The model must have an output for every class of the annotation (a merged one has the
    sum of its sources')."""
    n_outputs = opt.n_finetune_classes if opt.pretrain_path is not None else opt.n_classes
    if len(data.class_names) > n_outputs:
        option = '--n_classes' if opt.pretrain_path is None else '--n_classes (to fine-tune)'
        raise UserError(f'{option} {n_outputs}, but {opt.annotation_path} has '
                        f'{len(data.class_names)} classes: give {option.split()[0]} '
                        f'{len(data.class_names)}')


def get_val_utils(opt):
    """Validation loader (n_val_samples clips per video) and log."""
    temporal_transform = get_temporal_transform(
        opt, TemporalEvenCrop(opt.sample_duration, opt.n_val_samples))
    val_data, collate_fn = get_validation_data(opt.video_path, opt.annotation_path, opt.dataset,
                                               opt.input_type, opt.file_type,
                                               get_val_spatial_transform(opt),
                                               temporal_transform, opt.strict_data)
    check_class_count(opt, val_data)
    videos_per_batch = max(1, opt.batch_size // opt.n_val_samples)
    val_loader = make_data_loader(val_data, videos_per_batch, False, opt,
                                  with_clip_counts(collate_fn))
    return val_loader, make_logger(opt, 'val.log', ['epoch', 'loss', 'acc', 'video_acc'])


def get_inference_utils(opt):
    """Inference loader (sliding-window clips of every video) and the class names."""
    temporal_transform = get_temporal_transform(
        opt, SlidingWindow(opt.sample_duration, opt.inference_stride))
    data, collate_fn = get_inference_data(opt.video_path, opt.annotation_path, opt.dataset,
                                          opt.input_type, opt.file_type, opt.inference_subset,
                                          get_inference_spatial_transform(opt),
                                          temporal_transform, opt.strict_data)
    # Uncropped frames of different videos may differ in size: one video per batch.
    batch_size = 1 if opt.inference_crop == 'nocrop' else opt.inference_batch_size
    return make_data_loader(data, batch_size, False, opt, collate_fn), data.class_names


def make_logger(opt, name: str, header: list):
    """The tsv log `name` in the result folder, written by the master process only (else None);
    a resumed run keeps the rows of the epochs before `begin_epoch`."""
    if not opt.is_master_node:
        return None
    return Logger(opt.result_path / name, header, append=opt.resume_path is not None,
                  drop_from_epoch=opt.begin_epoch)


def sources_note(loader, weights) -> str:
    """'training videos: N (source a: n, ...)', with each source's clips per epoch under
    --source_weights."""
    records = loader.dataset.data
    line = f'training videos: {len(records)}'
    if not records.source_names:
        return line
    sizes = np.bincount(records.sources, minlength=len(records.source_names))
    line += ' (' + ', '.join(f'{name}: {n}' for name, n in zip(records.source_names, sizes))
    if weights is not None:
        draws = loader.batch_sampler.draws
        line += '; clips per epoch by --source_weights: ' + ', '.join(
            f'{name}: {n}' for name, n in zip(records.source_names, draws))
    return line + ')'


def bad_frames_note(loader) -> str:
    """', bad frames replaced: N, videos skipped: M' for the epoch just loaded ('' if none)."""
    replaced, skipped = loader.dataset.bad_frames.take()
    notes = [f'{what}: {n}' for what, n in (('bad frames replaced', replaced),
                                            ('videos skipped', skipped)) if n]
    return ''.join(', ' + note for note in notes)


def main_worker(opt, stop: StopSignals):
    master = opt.is_master_node
    log = print if master else (lambda *args, **kwargs: None)
    tb_writer = open_writer(opt.result_path / 'vdl') if opt.tensorboard and master else None
    set_seed(opt.manual_seed)
    device = get_device(opt.no_cuda)
    paddle.set_device(device)
    if opt.distributed:
        init_distributed(device)

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

    checkpoint = None
    if opt.resume_path is not None:  # every process loads the same checkpoint
        checkpoint = load_checkpoint(opt.resume_path, opt.arch)
        check_state_dict(model, checkpoint.weights, checkpoint.path)  # e.g. another width
        opt.begin_epoch = checkpoint.state['epoch'] + 1
        log(f'resuming from {checkpoint.path} at epoch {opt.begin_epoch}')

    optimizer = scheduler = scaler = None
    if not opt.no_train:
        if master:
            remove_unfinished_checkpoints(opt.result_path)
            check_free_space(opt.result_path, model)
        (train_loader, train_logger, train_batch_logger, optimizer,
         scheduler) = get_train_utils(opt, parameters)
        log(sources_note(train_loader, opt.source_weights))
        scaler = make_grad_scaler(opt.amp)
    if not opt.no_val:
        val_loader, val_logger = get_val_utils(opt)
    overwrite = opt.overwrite_milestones and opt.lr_scheduler == 'multistep'
    best = restore_training_state(checkpoint, model, optimizer, scheduler, scaler,
                                  opt.multistep_milestones if overwrite else None)
    del checkpoint  # its arrays are in the model and the optimizer now
    # DataParallel gives every process rank 0's weights (the resumed ones) and averages the
    # gradients over the processes in backward
    train_model = paddle.DataParallel(model) if opt.distributed and not opt.no_train else model

    # Without training the weights never change: one validation, not one per epoch left.
    last_epoch = opt.begin_epoch if opt.no_train else opt.n_epochs
    for epoch in range(opt.begin_epoch, last_epoch + 1):
        if opt.no_train and opt.no_val:
            break
        summary = [f'epoch {epoch}/{opt.n_epochs}']
        if not opt.no_train:
            seed = epoch_seed(opt.manual_seed, epoch, opt.dist_rank)
            set_seed(seed)
            train_loader.seeder.seed = seed
            if opt.distributed or opt.source_weights is not None:
                # one order for all processes, a shard of it each; the sources' shares
                train_loader.batch_sampler.set_epoch(epoch_seed(opt.manual_seed, epoch) % 2**32)
            lr = optimizer.get_lr()
            trained = train_epoch(epoch, stop.watch(train_loader, opt.distributed), train_model,
                                  optimizer, lr, train_logger, train_batch_logger, tb_writer,
                                  opt.amp, scaler)
            if opt.distributed:
                average_batch_norm_stats(model)
            summary.append(f'train loss {trained.loss:.4f} acc {trained.acc:.3f} lr {lr:g} '
                           f'({trained.seconds:.0f} s, waiting for data '
                           f'{trained.data_seconds:.0f} s{bad_frames_note(train_loader)})')
        if not opt.no_val:
            val_loss, val_acc, video_acc, seconds = val_epoch(
                epoch, stop.watch(val_loader), model, val_logger, tb_writer, opt.amp)
            best.update(epoch, val_loss, val_acc)
            summary.append(f'val loss {val_loss:.4f} acc {val_acc:.3f} video acc {video_acc:.3f}'
                           f' ({seconds:.0f} s'
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
                                      backend=opt.inference_backend, amp=opt.amp)
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


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
