"""main.py --tensorboard: VisualDL scalars under {result_path}/vdl, the values of the tsv logs."""
import sys

import pytest

from conftest import read_log
import main
from utils import UserError

TINY = ['--dataset', 'ucf101', '--n_classes', '2', '--model_depth', '10', '--sample_size', '32',
        '--sample_duration', '8', '--batch_size', '8', '--learning_rate', '0.01',
        '--multistep_milestones', '2', '--n_val_samples', '2', '--n_threads', '0']


def run(motion_data, result_path, *args):
    video_path, annotation_path = motion_data
    main.main(['--video_path', str(video_path), '--annotation_path', str(annotation_path),
               '--result_path', str(result_path), *TINY, *args])


def test_scalars_read_back_equal_the_logs(motion_data, tmp_path):
    pytest.importorskip('visualdl', reason='VisualDL is an optional extra: pip install visualdl')
    from visualdl import LogReader
    run(motion_data, tmp_path, '--n_epochs', '3', '--tensorboard')
    records = list((tmp_path / 'vdl').glob('vdlrecords.*.log'))
    assert len(records) == 1
    reader = LogReader(file_path=str(records[0]))

    def scalars(tag):
        return [(record.id, record.value) for record in reader.get_data('scalar', tag)]

    train, val = read_log(tmp_path / 'train.log'), read_log(tmp_path / 'val.log')
    batches = read_log(tmp_path / 'train_batch.log')
    for tag, log, column in (('train/loss', train, 'loss'), ('train/acc', train, 'acc'),
                             ('train/lr', train, 'lr'), ('val/loss', val, 'loss'),
                             ('val/acc', val, 'acc'), ('val/video_acc', val, 'video_acc'),
                             ('train_iter/loss', batches, 'loss')):
        step = 'iter' if tag.startswith('train_iter') else 'epoch'
        expected = [(int(row[step]), pytest.approx(float(row[column]), rel=1e-6)) for row in log]
        assert scalars(tag) == expected, tag
    assert [lr for _, lr in scalars('train/lr')] == pytest.approx([0.01, 0.01, 0.001], rel=1e-6)
    assert len(scalars('train_iter/loss')) == 3 * 4  # 32 clips / batch 8 an epoch


def test_video_accuracy_is_val_logs_last_column_and_in_the_epoch_summary(motion_data, tmp_path,
                                                                          capsys):
    run(motion_data, tmp_path, '--n_epochs', '2')
    val = read_log(tmp_path / 'val.log')
    assert list(val[0]) == ['epoch', 'loss', 'acc', 'video_acc']  # the reference's, then ours
    summaries = [line for line in capsys.readouterr().out.splitlines()
                 if line.startswith('epoch ')]
    assert len(summaries) == 2
    for row, line in zip(val, summaries):
        assert f"acc {float(row['acc']):.3f} video acc {float(row['video_acc']):.3f}" in line


def test_without_visualdl_the_flag_says_how_to_install_it(motion_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'visualdl', None)  # as if it were not installed
    with pytest.raises(UserError, match='pip install visualdl'):
        run(motion_data, tmp_path, '--n_epochs', '1', '--tensorboard')
    assert not (tmp_path / 'train.log').exists()  # before any training
