"""VisualDL scalars of a training run (`main.py --tensorboard`), under RESULT_PATH/vdl.

Tags: the reference's per-epoch `train/loss`, `train/acc`, `train/lr` (the learning rate of the
epoch; the reference logged the accuracy there), `val/loss`, `val/acc`, and the training loss of
every iteration, `train_iter/loss`. View them with `visualdl --logdir RESULT_PATH/vdl`.
VisualDL is an optional extra: pip install visualdl.
"""
from pathlib import Path

from utils import UserError

# VisualDL writes records from a background thread every flush_secs (default 120): a run that is
# killed keeps all but the last few seconds of its curves.
FLUSH_SECONDS = 5


def open_writer(log_dir: Path):
    """VisualDL's LogWriter into `log_dir`; without VisualDL, a UserError saying how to get it."""
    try:
        from visualdl import LogWriter
    except ImportError as e:
        raise UserError('--tensorboard writes VisualDL logs and needs VisualDL: '
                        'pip install visualdl') from e
    return LogWriter(logdir=str(log_dir), flush_secs=FLUSH_SECONDS)
