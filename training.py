"""One training epoch."""
import time

import paddle
import paddle.nn.functional as F
from tqdm import tqdm

from utils import AverageMeter


def calculate_accuracy(outputs: paddle.Tensor, targets: paddle.Tensor) -> float:
    """Top-1 accuracy of logits [N, n_classes] against labels [N]."""
    pred = paddle.argmax(outputs, axis=1)
    return float((pred == targets.astype(pred.dtype)).astype('float32').mean())


def train_epoch(epoch: int, data_loader, model, optimizer, current_lr: float,
                epoch_logger=None, batch_logger=None):
    """Train `model` for one pass over `data_loader`; returns (mean loss, mean accuracy, seconds)."""
    model.train()
    losses, accuracies = AverageMeter(), AverageMeter()
    start = time.time()
    bar = tqdm(data_loader, desc=f'train {epoch}', leave=False, dynamic_ncols=True)
    for i, (inputs, targets) in enumerate(bar):
        outputs = model(inputs)  # [N, n_classes]
        loss = F.cross_entropy(outputs, targets)
        optimizer.clear_grad()
        loss.backward()
        optimizer.step()

        n = inputs.shape[0]
        losses.update(float(loss), n)
        accuracies.update(calculate_accuracy(outputs.detach(), targets), n)
        if batch_logger is not None:
            batch_logger.log({'epoch': epoch, 'batch': i + 1,
                              'iter': (epoch - 1) * len(data_loader) + i + 1,
                              'loss': losses.val, 'acc': accuracies.val, 'lr': current_lr})
        bar.set_postfix(loss=f'{losses.avg:.4f}', acc=f'{accuracies.avg:.3f}')
    bar.close()

    if epoch_logger is not None:
        epoch_logger.log({'epoch': epoch, 'loss': losses.avg, 'acc': accuracies.avg,
                          'lr': current_lr})
    return losses.avg, accuracies.avg, time.time() - start
