"""One validation pass: every clip of every validation video is one sample."""
import time

import paddle
import paddle.nn.functional as F
from tqdm import tqdm

from training import calculate_accuracy
from utils import AverageMeter, all_sum


def val_epoch(epoch: int, data_loader, model, logger=None, tb_writer=None):
    """Evaluate `model` on `data_loader`; returns (mean loss, mean clip accuracy, seconds).

    In a data-parallel run each process evaluates its shard and the means are over all clips of
    all processes. `tb_writer` (a VisualDL LogWriter) gets the loss and accuracy.
    """
    model.eval()
    losses, accuracies = AverageMeter(), AverageMeter()
    start = time.time()
    with paddle.no_grad():
        with tqdm(data_loader, desc=f'val {epoch}', leave=False, dynamic_ncols=True) as bar:
            for inputs, targets in bar:
                outputs = model(inputs)
                n = inputs.shape[0]
                losses.update(float(F.cross_entropy(outputs, targets)), n)
                accuracies.update(calculate_accuracy(outputs, targets), n)
                bar.set_postfix(loss=f'{losses.avg:.4f}', acc=f'{accuracies.avg:.3f}')
    # the shards may differ in size by a video: sums once, after the last batch
    loss_sum, correct, n = all_sum([losses.sum, accuracies.sum, losses.count])
    loss, acc = loss_sum / max(n, 1), correct / max(n, 1)
    if logger is not None:
        logger.log({'epoch': epoch, 'loss': loss, 'acc': acc})
    if tb_writer is not None:
        tb_writer.add_scalar('val/loss', loss, epoch)
        tb_writer.add_scalar('val/acc', acc, epoch)
    return loss, acc, time.time() - start
