"""One validation pass: every clip of every validation video is one sample."""
import time

import paddle
import paddle.nn.functional as F
from tqdm import tqdm

from training import calculate_accuracy
from utils import AverageMeter


def val_epoch(epoch: int, data_loader, model, logger=None, tb_writer=None):
    """Evaluate `model` on `data_loader`; returns (mean loss, mean clip accuracy, seconds).

    `tb_writer` (a VisualDL LogWriter) gets the loss and accuracy.
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
    if logger is not None:
        logger.log({'epoch': epoch, 'loss': losses.avg, 'acc': accuracies.avg})
    if tb_writer is not None:
        tb_writer.add_scalar('val/loss', losses.avg, epoch)
        tb_writer.add_scalar('val/acc', accuracies.avg, epoch)
    return losses.avg, accuracies.avg, time.time() - start
