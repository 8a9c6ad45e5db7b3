"""One validation pass: every clip of every validation video is one sample."""
import time
from typing import List

import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm import tqdm

from distributed import all_sum
from training import autocast, calculate_loss, count_correct


def with_clip_counts(collate_fn):
    """A collate_fn of several clips per video that also returns each video's number of clips,
    so that a batch's clips can be grouped by video.

    The counts are a list of ints: Paddle's DataLoader passes a list through as it is, but
    would turn an array into a tensor on the device, to be read back for every batch.
    """
    def collate(batch):
        clips, targets = collate_fn(batch)
        return clips, targets, [len(video_clips) for video_clips, _ in batch]
    return collate


def val_epoch(epoch: int, data_loader, model, logger=None, tb_writer=None, amp=None):
    """Evaluate `model` on `data_loader`; returns (mean loss, mean clip accuracy, video accuracy,
    seconds).

    The loss and clip accuracy are the reference's (every clip a sample). The video accuracy is
    the paper's: the clips' softmax scores averaged per video, top-1 against its label; it needs
    batches of (clips, targets, clips per video) (`with_clip_counts`), else it is NaN.
    In a data-parallel run each process evaluates its shard and all figures are over all clips
    and videos of all processes. `tb_writer` (a VisualDL LogWriter) gets all three.
    """
    model.eval()
    # on the device until the end: [loss sum, correct clips, clips, correct videos, videos]
    sums = paddle.zeros([5], 'float64')
    start = time.time()
    with paddle.no_grad():
        with tqdm(data_loader, desc=f'val {epoch}', leave=False, dynamic_ncols=True) as bar:
            for inputs, targets, *counts in bar:
                with autocast(amp):
                    outputs = model(inputs)
                n = inputs.shape[0]
                batch = [calculate_loss(outputs, targets) * n, count_correct(outputs, targets),
                         paddle.full([], n, 'float32')]
                if counts:
                    batch += video_correct(outputs, targets, counts[0])
                else:
                    batch += [paddle.zeros([], 'float32')] * 2
                sums += paddle.stack(batch).astype('float64')
    # the shards may differ in size by a video: sums once, after the last batch
    loss_sum, correct, n, videos_correct, videos = all_sum(sums.numpy())
    loss, acc = loss_sum / max(n, 1), correct / max(n, 1)
    video_acc = videos_correct / videos if videos else float('nan')
    if logger is not None:
        logger.log({'epoch': epoch, 'loss': loss, 'acc': acc, 'video_acc': video_acc})
    if tb_writer is not None:
        tb_writer.add_scalar('val/loss', loss, epoch)
        tb_writer.add_scalar('val/acc', acc, epoch)
        tb_writer.add_scalar('val/video_acc', video_acc, epoch)
    return loss, acc, video_acc, time.time() - start


def video_correct(outputs: paddle.Tensor, targets: paddle.Tensor, counts: List[int]) -> list:
    """[correct videos, videos] of a batch whose clips come `counts[i]` per video, in order."""
    scores = F.softmax(outputs.astype('float32'), axis=1)
    first = np.cumsum([0] + counts[:-1]).tolist()
    # the mean score of each video's clips: a [videos, clips] averaging matrix
    weights = np.zeros([len(counts), outputs.shape[0]], 'float32')
    for v, (begin, count) in enumerate(zip(first, counts)):
        weights[v, begin:begin + count] = 1.0 / count
    video_scores = paddle.matmul(paddle.to_tensor(weights), scores)
    video_targets = paddle.gather(targets, paddle.to_tensor(first, dtype='int64'))
    return [count_correct(video_scores, video_targets),
            paddle.full([], len(counts), 'float32')]
