"""plot_logs: one PNG of loss, accuracy and learning rate curves of one or more runs."""
import sys

import numpy as np
import pytest

from util_scripts import plot_logs
from utils import Logger, UserError

BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # matplotlib's first two colours, C0 and C1


def write_run(folder, n_epochs=6, with_val=True, scale=1.0):
    """train.log and val.log as main.py writes them (utils.Logger), with falling losses."""
    folder.mkdir(parents=True)
    train = Logger(folder / 'train.log', ['epoch', 'loss', 'acc', 'lr'])
    val = Logger(folder / 'val.log', ['epoch', 'loss', 'acc']) if with_val else None
    for epoch in range(1, n_epochs + 1):
        lr = 0.1 if epoch <= n_epochs // 2 else 0.01
        train.log({'epoch': epoch, 'loss': scale * 2 / epoch, 'acc': 1 - 0.5 / epoch, 'lr': lr})
        if val:
            val.log({'epoch': epoch, 'loss': scale * 2.5 / epoch, 'acc': 1 - 0.6 / epoch})
    return folder


def pixels_near(image, colour, tolerance=40):
    """How many pixels of each third (panel) of an RGB image are within `tolerance` of `colour`."""
    rgb = np.asarray(image.convert('RGB'), dtype='int32')
    near = np.abs(rgb - np.asarray(colour)).sum(axis=2) < tolerance
    return [int(part.sum()) for part in np.array_split(near, 3, axis=1)]


@pytest.fixture
def image_module():
    pytest.importorskip('matplotlib', reason='matplotlib is an optional extra: '
                        'pip install matplotlib')
    from PIL import Image
    return Image


def test_one_run_draws_three_panels_of_curves(tmp_path, image_module, capsys):
    run = write_run(tmp_path / 'results')
    plot_logs.main([str(run)])
    assert capsys.readouterr().out.strip() == f'curves of 1 run: {run / "curves.png"}'
    image = image_module.open(run / 'curves.png')
    width, height = plot_logs.FIGURE_SIZE
    assert image.size == (width * plot_logs.DPI, height * plot_logs.DPI)
    assert all(n > 300 for n in pixels_near(image, BLUE))  # loss, accuracy and lr curves
    assert pixels_near(image, ORANGE) == [0, 0, 0]
    assert np.asarray(image.convert('L')).std() > 10  # not a blank page


def test_several_runs_share_the_panels_in_their_own_colours(tmp_path, image_module):
    first = write_run(tmp_path / 'a')
    second = write_run(tmp_path / 'b', n_epochs=4, with_val=False, scale=0.5)
    output = tmp_path / 'plots' / 'compare.png'
    plot_logs.main([str(first), str(second), '--output', str(output)])
    image = image_module.open(output)
    assert all(n > 300 for n in pixels_near(image, BLUE))
    assert all(n > 150 for n in pixels_near(image, ORANGE))


def test_read_run_returns_the_logged_values(tmp_path):
    run = write_run(tmp_path / 'results', n_epochs=2, with_val=False)
    logs = plot_logs.read_run(run)
    assert list(logs) == ['train']
    assert logs['train'] == {'epoch': [1, 2], 'loss': [2, 1], 'acc': [0.5, 0.75], 'lr': [0.1, 0.01]}


def test_mistakes_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match='result folder not found'):
        plot_logs.main([str(tmp_path / 'none')])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UserError, match='no epochs in train.log or val.log'):
        plot_logs.main([str(tmp_path / 'empty')])
    (tmp_path / 'empty' / 'train.log').write_text('epoch\tloss\tacc\tlr\n1\t0.5\tnan?\t0.1\n')
    with pytest.raises(UserError, match='train.log line 2'):
        plot_logs.main([str(tmp_path / 'empty')])
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, 'matplotlib.figure', None)
    with pytest.raises(UserError, match='pip install matplotlib'):
        plot_logs.main([str(write_run(tmp_path / 'results'))])
