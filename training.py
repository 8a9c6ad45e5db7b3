"""One training epoch; the loss, the accuracy and mixed precision it uses."""
import contextlib
import time
from typing import NamedTuple, Optional

import paddle
from tqdm import tqdm

from distributed import all_sum
from models import onednn
from utils import AverageMeter, Interrupted, UserError, default_read_interval

# Paddle's mixed-precision lists name `conv2d` but not `conv3d`: an operation on neither list
# runs in float32 when an input is float32, so without this the 3D convolutions would stay in
# float32 and only the classifier run in half precision. BatchNorm is on neither list, but
# Paddle decides its precision by its input x alone (GetPromoteType, paddle/fluid/imperative/
# amp_utils.h) and casts only x: after a half-precision convolution it normalizes float16
# (bfloat16) activations with float32 weights and running statistics, as BatchNorm does under
# the reference's torch.cuda.amp.autocast. The loss is float32 (`calculate_loss`, outside the
# autocast).
AMP_WHITE_LIST = {'conv3d'}


def check_amp(amp, device: str) -> None:
    """Refuse, with one line, an --amp the device cannot run."""
    if not amp:
        return
    if device == 'cpu':
        if amp != 'bfloat16':
            raise UserError('--amp float16 needs a GPU; on a CPU with bfloat16 instructions '
                            '(avx512_bf16 or amx_bf16), use --amp bfloat16')
        if not onednn.bfloat16_supported():
            raise UserError('--amp bfloat16: this CPU has no bfloat16 instructions (avx512_bf16 '
                            'or amx_bf16 in lscpu) or oneDNN could not be loaded; drop --amp')
        return
    # auto_cast's capability tests (_is_gpu_float16_supported, _is_gpu_bfloat16_supported in
    # paddle/amp/auto_cast.py, 2.6 and 3.x): below compute capability 7.0 (float16) or 8.0
    # (bfloat16) it switches itself off, while GradScaler would go on scaling. (Its bfloat16 test
    # also asks for CUDA 11, which every build for capability 8.0 is.)
    # paddle.amp.is_float16_supported('gpu') says yes from 5.3.
    needed = {'float16': 7, 'bfloat16': 8}[amp]
    major, minor = paddle.device.cuda.get_device_capability()
    if major < needed and not paddle.is_compiled_with_rocm():
        hint = 'drop --amp' if amp == 'float16' else 'use --amp (float16) or drop --amp'
        raise UserError(f'--amp {amp}: this GPU has compute capability {major}.{minor}; '
                        f"Paddle's auto_cast needs {needed}.0 or higher for {amp}; {hint}")


def autocast(amp):
    """The mixed-precision context of --amp ('float16', 'bfloat16' or None: float32).

    On GPU, Paddle's auto_cast. On CPU (bfloat16 only), the oneDNN convolutions multiply in
    bfloat16 and accumulate in float32, forward and both backward passes
    (`onednn.compute_dtype`). In a ResNet's channels-last trunk (`resnet.ResNet`, shortcut B)
    the activations between layers, and their gradients, are bfloat16 too, as under PyTorch's
    autocast; elsewhere the tensors stay float32. The weights and their gradients, BatchNorm's
    statistics, scale and shift, the logits, the loss and the optimizer's state are float32 in
    every model.
    """
    if not amp:
        return contextlib.nullcontext()
    if paddle.device.get_device() == 'cpu':
        return onednn.compute_dtype(amp)
    return paddle.amp.auto_cast(custom_white_list=AMP_WHITE_LIST, level='O1', dtype=amp)


def make_grad_scaler(amp):
    """A GradScaler for float16 (bfloat16 has float32's range and needs none)."""
    return paddle.amp.GradScaler() if amp == 'float16' else None


def calculate_loss(outputs: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
    """Mean cross-entropy of logits [N, n_classes] against labels [N], in float32.

    As the reference's (PyTorch's) cross-entropy: log-softmax, then the negative log-likelihood.
    Paddle's `cross_entropy` and `log_softmax` clip each log-probability at -64 on CPU, which the
    validation loss and the plateau scheduler would see on confident wrong predictions; logits
    minus their log-sum-exp do not. The gradient is cross-entropy's.
    """
    logits = outputs.astype('float32')
    log_probs = logits - paddle.logsumexp(logits, axis=1, keepdim=True)
    picked = paddle.take_along_axis(log_probs, targets.reshape([-1, 1]).astype('int64'), axis=1)
    return -picked.mean()


def count_correct(outputs: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
    """How many top-1 predictions of logits [N, n_classes] are right, as a float32 tensor."""
    pred = paddle.argmax(outputs, axis=1)
    return (pred == targets.astype(pred.dtype)).astype('float32').sum()


def calculate_accuracy(outputs: paddle.Tensor, targets: paddle.Tensor) -> float:
    """Top-1 accuracy of logits [N, n_classes] against labels [N]."""
    return float(count_correct(outputs, targets)) / max(1, outputs.shape[0])


class EpochResult(NamedTuple):
    loss: float  # means over the epoch's clips
    acc: float
    seconds: float
    data_seconds: float  # of `seconds`, waiting for the data loader


def train_epoch(epoch: int, data_loader, model, optimizer, current_lr: float,
                epoch_logger=None, batch_logger=None, tb_writer=None, amp=None, scaler=None,
                read_interval: Optional[int] = None) -> EpochResult:
    """Train `model` for one pass over `data_loader`.

    `batch_logger` gets a row per batch: loss and accuracy of the batch, and as the reference
    printed them, `data_time` (seconds waiting for the batch: a starved device shows here) and
    `batch_time` (seconds from the previous batch to this one, data included), read from the
    device every `read_interval` batches in one transfer (default: utils'
    `default_read_interval()`): the logged values are the same; only the progress bar's figures
    move in steps of that many batches.

    In a data-parallel run the loss and accuracy of each batch are those of all processes'
    batches together, so every process returns (and the master logs) the same numbers.
    `tb_writer` (a VisualDL LogWriter) gets the loss of every iteration and the epoch's loss,
    accuracy and learning rate. `amp` ('float16' or 'bfloat16') runs the forward pass in mixed
    precision, with `scaler` (a GradScaler) scaling the loss for float16.
    """
    model.train()
    losses, accuracies = AverageMeter(), AverageMeter()
    data_seconds = 0.0
    if read_interval is None:
        read_interval = default_read_interval()
    start = end = time.time()
    # per batch not yet read: (batch index, [loss * n, correct, n] on the device, data_time,
    # batch_time)
    pending = []

    def read_pending():
        """Log the pending batches with one transfer (and one all-reduce) for all."""
        nonlocal end
        if not pending:
            return
        sums = all_sum(paddle.stack([values for _, values, *_ in pending]).numpy().ravel())
        # the wait for the device (and the other processes) is the last batch's time, not the
        # next batch's time waiting for data
        now = time.time()
        i, values, data_time, batch_time = pending[-1]
        pending[-1] = (i, values, data_time, batch_time + now - end)
        end = now
        for (i, _, data_time, batch_time), (loss_sum, correct, n) in zip(pending,
                                                                       sums.reshape(-1, 3)):
            losses.update(loss_sum / n, n)
            accuracies.update(correct / n, n)
            iteration = (epoch - 1) * len(data_loader) + i + 1
            if batch_logger is not None:
                batch_logger.log({'epoch': epoch, 'batch': i + 1, 'iter': iteration,
                                  'loss': losses.val, 'acc': accuracies.val, 'lr': current_lr,
                                  'data_time': data_time, 'batch_time': batch_time})
            if tb_writer is not None:
                tb_writer.add_scalar('train_iter/loss', losses.val, iteration)
        pending.clear()
        bar.set_postfix(loss=f'{losses.avg:.4f}', acc=f'{accuracies.avg:.3f}')

    # `with`: the bar is cleared on an interrupt too, before its message is printed
    with tqdm(data_loader, desc=f'train {epoch}', leave=False, dynamic_ncols=True) as bar:
        try:
            for i, (inputs, targets) in enumerate(bar):
                data_time = time.time() - end
                data_seconds += data_time
                with autocast(amp):
                    outputs = model(inputs)  # [N, n_classes]
                loss = calculate_loss(outputs, targets)
                optimizer.clear_grad()
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()

                n = float(inputs.shape[0])
                with paddle.no_grad():
                    values = paddle.stack([loss.detach() * n,
                                           count_correct(outputs.detach(), targets),
                                           paddle.full([], n, 'float32')])
                now = time.time()
                batch_time, end = now - end, now
                pending.append((i, values, data_time, batch_time))
                if len(pending) >= read_interval:
                    read_pending()
        except Interrupted:  # every process stops at the same batch: the rows read so far
            read_pending()
            raise
        read_pending()

    if epoch_logger is not None:
        epoch_logger.log({'epoch': epoch, 'loss': losses.avg, 'acc': accuracies.avg,
                          'lr': current_lr})
    if tb_writer is not None:
        tb_writer.add_scalar('train/loss', losses.avg, epoch)
        tb_writer.add_scalar('train/acc', accuracies.avg, epoch)
        tb_writer.add_scalar('train/lr', current_lr, epoch)  # the reference logged acc here
    return EpochResult(losses.avg, accuracies.avg, time.time() - start, data_seconds)
