"""One training epoch."""
import contextlib
import time

import paddle
import paddle.nn.functional as F
from tqdm import tqdm

from utils import AverageMeter, all_sum


def calculate_accuracy(outputs: paddle.Tensor, targets: paddle.Tensor) -> float:
    """Top-1 accuracy of logits [N, n_classes] against labels [N]."""
    pred = paddle.argmax(outputs, axis=1)
    return float((pred == targets.astype(pred.dtype)).astype('float32').mean())


def train_epoch(epoch: int, data_loader, model, optimizer, current_lr: float,
                epoch_logger=None, batch_logger=None, tb_writer=None, amp=None, scaler=None):
    """Train `model` for one pass over `data_loader`; returns (mean loss, mean accuracy, seconds).

    In a data-parallel run the loss and accuracy of each batch are those of all processes'
    batches together, so every process returns (and the master logs) the same numbers.
    `tb_writer` (a VisualDL LogWriter) gets the loss of every iteration and the epoch's loss,
    accuracy and learning rate. `amp` ('float16' or 'bfloat16') runs the forward pass in mixed
    precision, with `scaler` (a GradScaler) scaling the loss for float16.
    """
    model.train()
    losses, accuracies = AverageMeter(), AverageMeter()
    start = time.time()
    autocast = (lambda: paddle.amp.auto_cast(dtype=amp)) if amp else contextlib.nullcontext
    # `with`: the bar is cleared on an interrupt too, before its message is printed
    with tqdm(data_loader, desc=f'train {epoch}', leave=False, dynamic_ncols=True) as bar:
        for i, (inputs, targets) in enumerate(bar):
            with autocast():
                outputs = model(inputs)  # [N, n_classes]
                loss = F.cross_entropy(outputs, targets)
            optimizer.clear_grad()
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

            n = inputs.shape[0]
            loss_sum, correct, n = all_sum(
                [float(loss) * n, calculate_accuracy(outputs.detach(), targets) * n, n])
            iteration = (epoch - 1) * len(data_loader) + i + 1
            losses.update(loss_sum / n, n)
            accuracies.update(correct / n, n)
            if batch_logger is not None:
                batch_logger.log({'epoch': epoch, 'batch': i + 1, 'iter': iteration,
                                  'loss': losses.val, 'acc': accuracies.val, 'lr': current_lr})
            if tb_writer is not None:
                tb_writer.add_scalar('train_iter/loss', losses.val, iteration)
            bar.set_postfix(loss=f'{losses.avg:.4f}', acc=f'{accuracies.avg:.3f}')

    if epoch_logger is not None:
        epoch_logger.log({'epoch': epoch, 'loss': losses.avg, 'acc': accuracies.avg,
                          'lr': current_lr})
    if tb_writer is not None:
        tb_writer.add_scalar('train/loss', losses.avg, epoch)
        tb_writer.add_scalar('train/acc', accuracies.avg, epoch)
        tb_writer.add_scalar('train/lr', current_lr, epoch)  # the reference logged acc here
    return losses.avg, accuracies.avg, time.time() - start
