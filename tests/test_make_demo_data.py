import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from util_scripts.make_demo_data import (CLASSES, TEXTURE_LENGTH, main, make_appearance,
                                         plan_clips, render_video, row_offsets)
from datasets.video_reader import count_frames
from util_scripts.utils import probe_video
from utils import UserError

REPO = Path(__file__).resolve().parents[1]
TINY = ['--n_train_per_class', '4', '--n_test_per_class', '2', '--clips_per_group', '2',
        '--width', '64', '--height', '48', '--min_frames', '8', '--max_frames', '12']


def test_layout_and_split_lists(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'util_scripts.make_demo_data', str(tmp_path),
                             *TINY], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f'to {tmp_path / "videos"}' in result.stdout
    assert f'to {tmp_path / "annotations"}' in result.stdout

    annotations = tmp_path / 'annotations'
    assert (annotations / 'classInd.txt').read_text() == (
        '1 DriftUp\n2 DriftDown\n3 Still\n4 Jitter\n')
    # 6 videos per class = 3 groups of 2 clips; each split tests one group.
    videos = sorted(str(p.relative_to(tmp_path / 'videos'))
                    for p in (tmp_path / 'videos').glob('*/*.avi'))
    assert len(videos) == 24
    assert 'Jitter/v_Jitter_g03_c02.avi' in videos
    tested_groups = []
    for split in (1, 2, 3):
        train = (annotations / f'trainlist0{split}.txt').read_text().splitlines()
        test = (annotations / f'testlist0{split}.txt').read_text().splitlines()
        assert len(train) == 16 and len(test) == 8
        assert train[0] == ('DriftUp/v_DriftUp_g02_c01.avi 1' if split == 1
                            else 'DriftUp/v_DriftUp_g01_c01.avi 1')
        if split != 1:
            assert 'Still/v_Still_g01_c02.avi 3' in train
        assert all(len(line.split()) == 1 for line in test)
        assert sorted([line.split()[0] for line in train] + test) == videos
        groups = {line.split('_g')[1][:2] for line in test}
        assert len(groups) == 1 and not any(f'_g{g}_' in line for g in groups for line in train)
        tested_groups.append(groups.pop())
    assert tested_groups == ['01', '02', '03']

    clip = tmp_path / 'videos' / 'DriftDown' / 'v_DriftDown_g02_c01.avi'
    assert probe_video(clip)['fps'] == 25
    assert 8 <= count_frames(clip) <= 12


def test_deterministic_given_seed(tmp_path):
    first = plan_clips(tmp_path, 2, 2, seed=3, frame_range=(10, 20))
    again = plan_clips(tmp_path, 2, 2, seed=3, frame_range=(10, 20))
    other = plan_clips(tmp_path, 2, 2, seed=4, frame_range=(10, 20))
    assert [c['path'].name for c in first][:2] == ['v_DriftUp_g01_c01.avi',
                                                   'v_DriftDown_g01_c01.avi']
    for a, b in zip(first, again):
        assert np.array_equal(a['offsets'], b['offsets'])
        assert np.array_equal(a['appearance']['profile'], b['appearance']['profile'])
    assert not np.array_equal(first[0]['appearance']['colours'], other[0]['appearance']['colours'])


def test_up_and_down_show_the_same_frames_moving_opposite_ways():
    rng = np.random.default_rng(0)
    appearance = make_appearance(rng)
    n_frames, speed, phase = 12, 3, 100
    up = render_video(appearance, row_offsets('DriftUp', n_frames, speed, phase, rng), 48, 64)
    # Down, started where up ends: the very same frames in reverse order.
    down = render_video(appearance, row_offsets('DriftDown', n_frames, speed,
                                                phase + (n_frames - 1) * speed, rng), 48, 64)
    assert up.shape == (n_frames, 48, 64, 3) and up.dtype == np.uint8
    assert np.array_equal(up, down[::-1])
    assert np.allclose(up.mean(axis=(1, 2, 3)), down.mean(axis=(1, 2, 3))[::-1])
    # Frame t+1 is frame t moved up (content of row r + d is now at row r), or down.
    assert np.array_equal(up[1:, :-speed], up[:-1, speed:])
    assert np.array_equal(down[1:, speed:], down[:-1, :-speed])
    assert not np.array_equal(up[1], up[0])
    # Stripes fill the frame: every column is the same, so a horizontal flip changes nothing.
    assert np.array_equal(up, up[:, :, ::-1])


def test_single_frames_have_the_same_statistics_in_every_class():
    """Mean brightness and contrast of frames, pooled over many random videos, match per class."""
    clips = plan_clips(Path('unused'), n_groups=40, clips_per_group=1, seed=0,
                       frame_range=(16, 16))
    stats = {name: [] for name in CLASSES}
    for clip in clips:
        frames = render_video(clip['appearance'], clip['offsets'], 48, 8).astype(float)
        stats[clip['path'].parent.name] += [(f.mean(), f.std()) for f in frames]
    pooled = {name: np.mean(values, axis=0) for name, values in stats.items()}
    for name in CLASSES:
        assert np.allclose(pooled[name], pooled['DriftUp'], rtol=0.15), pooled


def test_a_clips_look_is_shared_by_every_class():
    """The look cannot be memorised per class: clip c of group g looks the same in all classes."""
    clips = plan_clips(Path('unused'), n_groups=3, clips_per_group=2, seed=0,
                       frame_range=(16, 16))
    by_group = {}
    for clip in clips:
        group_clip = clip['path'].stem.split('_g')[1]  # e.g. '02_c01'
        by_group.setdefault(group_clip, []).append(clip['appearance'])
    assert len(by_group) == 6
    for looks in by_group.values():
        assert len(looks) == len(CLASSES)
        for look in looks[1:]:
            np.testing.assert_array_equal(look['profile'], looks[0]['profile'])
            np.testing.assert_array_equal(look['colours'], looks[0]['colours'])
    assert not np.array_equal(by_group['01_c01'][0]['profile'], by_group['01_c02'][0]['profile'])
    assert not np.array_equal(by_group['01_c01'][0]['profile'], by_group['02_c01'][0]['profile'])


def test_still_and_jitter_motion():
    rng = np.random.default_rng(1)
    still = row_offsets('Still', 10, 4, 7, rng)
    jitter = row_offsets('Jitter', 200, 4, 7, rng)
    assert still.tolist() == [7] * 10
    assert len(set(np.diff(jitter).tolist())) > 100
    assert jitter.min() >= 0 and jitter.max() < TEXTURE_LENGTH


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match='--n_test_per_class 3 is not a multiple of '
                                        '--clips_per_group 2'):
        main([str(tmp_path), '--n_test_per_class', '3'])
    with pytest.raises(UserError, match='--n_train_per_class must be positive'):
        main([str(tmp_path), '--n_train_per_class', '0'])
    with pytest.raises(UserError, match='--max_frames 5 is below --min_frames 50'):
        main([str(tmp_path), '--max_frames', '5'])
