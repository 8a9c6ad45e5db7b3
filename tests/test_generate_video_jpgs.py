import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from util_scripts import utils as script_utils
from util_scripts.generate_video_jpgs import main
from util_scripts.utils import find_ffmpeg
from utils import UserError

REPO = Path(__file__).resolve().parents[1]


def make_video(path: Path, width: int, height: int, seconds: float = 1, rate: int = 25) -> None:
    """A test-pattern video of `seconds * rate` frames, written by ffmpeg itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([find_ffmpeg(), '-v', 'error', '-y', '-f', 'lavfi',
                    '-i', f'testsrc=size={width}x{height}:rate={rate}', '-t', str(seconds),
                    '-pix_fmt', 'yuv420p', str(path)], check=True)


def frame_names(folder: Path):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope='module')
def ucf_videos(tmp_path_factory):
    """SRC/<class>/<video>.avi: a landscape video, a portrait one, and a text file named .avi."""
    src = tmp_path_factory.mktemp('videos')
    make_video(src / 'ClassA' / 'v_ClassA_g01_c01.avi', 320, 240)
    make_video(src / 'ClassB' / 'v_ClassB_g01_c01.avi', 200, 250)
    (src / 'ClassB' / 'notes.txt').write_text('not a video, not an .avi: ignored')
    return src


def test_frames_layout_size_and_unreadable_video_via_module(ucf_videos, tmp_path):
    broken = ucf_videos / 'ClassB' / 'v_ClassB_g02_c01.avi'
    broken.write_text('this is a text file, not a video\n')
    try:
        dst = tmp_path / 'not' / 'yet' / 'there'
        result = subprocess.run([sys.executable, '-m', 'util_scripts.generate_video_jpgs',
                                 str(ucf_videos), str(dst), 'ucf101', '--size', '120',
                                 '--n_jobs', '2'],
                                cwd=REPO, capture_output=True, text=True)
    finally:
        broken.unlink()

    assert result.returncode == 1
    assert '3 videos: 2 done, 0 skipped (already complete), 1 failed' in result.stdout
    failure = [line for line in result.stderr.splitlines() if line.startswith('failed:')]
    assert len(failure) == 1
    assert failure[0].startswith(f'failed: {broken}: ')
    assert 'Invalid data found when processing input' in failure[0]
    assert result.stderr.strip().splitlines()[-1] == (
        'error: 1 of 3 videos could not be read by ffmpeg (listed above)')
    assert sorted(p.name for p in dst.iterdir()) == ['ClassA', 'ClassB']
    assert sorted(p.name for p in (dst / 'ClassB').iterdir()) == ['v_ClassB_g01_c01']
    landscape = dst / 'ClassA' / 'v_ClassA_g01_c01'
    assert frame_names(landscape) == [f'image_{i:05d}.jpg' for i in range(1, 26)]
    assert Image.open(landscape / 'image_00001.jpg').size == (160, 120)
    # Portrait: the width is the shorter side; 250 * 120 / 200 = 150.
    portrait = dst / 'ClassB' / 'v_ClassB_g01_c01'
    assert len(frame_names(portrait)) == 25
    assert Image.open(portrait / 'image_00025.jpg').size == (120, 150)


def test_skips_complete_folder_and_redoes_half_done_one(ucf_videos, tmp_path, capsys):
    dst = tmp_path / 'jpg'
    main([str(ucf_videos), str(dst), 'ucf101', '--size', '64', '--n_jobs', '1'])
    complete = dst / 'ClassA' / 'v_ClassA_g01_c01'
    half_done = dst / 'ClassB' / 'v_ClassB_g01_c01'
    mtimes = {p: p.stat().st_mtime_ns for p in [complete, *complete.iterdir()]}
    for frame in sorted(half_done.iterdir())[10:]:
        frame.unlink()
    # A stale temp folder of a killed run is cleared, never taken for frames.
    (dst / 'ClassB' / '.v_ClassB_g01_c01.part').mkdir()
    (dst / 'ClassB' / '.v_ClassB_g01_c01.part' / 'image_00001.jpg').write_text('junk')
    capsys.readouterr()

    main([str(ucf_videos), str(dst), 'ucf101', '--size', '64', '--n_jobs', '2'])

    assert '2 videos: 1 done, 1 skipped (already complete), 0 failed' in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert frame_names(half_done) == [f'image_{i:05d}.jpg' for i in range(1, 26)]
    assert sorted(p.name for p in (dst / 'ClassB').iterdir()) == ['v_ClassB_g01_c01']


def test_fps_resamples(ucf_videos, tmp_path):
    dst = tmp_path / 'jpg'
    main([str(ucf_videos), str(dst), 'hmdb51', '--fps', '10', '--size', '32'])
    assert len(frame_names(dst / 'ClassA' / 'v_ClassA_g01_c01')) == 10


def test_activitynet_flat_and_kinetics_test_folder(tmp_path):
    make_video(tmp_path / 'anet' / 'v_abc.mp4', 64, 48, seconds=0.4)
    make_video(tmp_path / 'kinetics' / 'test' / 'xyz_000001_000011.mp4', 64, 48, seconds=0.4)
    make_video(tmp_path / 'kinetics' / 'dancing' / 'abc_000000_000010.mp4', 64, 48, seconds=0.4)

    main([str(tmp_path / 'anet'), str(tmp_path / 'anet_jpg'), 'activitynet', '--size', '32'])
    main([str(tmp_path / 'kinetics'), str(tmp_path / 'k_jpg'), 'kinetics', '--size', '32'])

    assert len(frame_names(tmp_path / 'anet_jpg' / 'v_abc')) == 10
    assert len(frame_names(tmp_path / 'k_jpg' / 'test' / 'xyz_000001_000011')) == 10
    assert len(frame_names(tmp_path / 'k_jpg' / 'dancing' / 'abc_000000_000010')) == 10


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match=f'video directory not found: {tmp_path / "nope"}'):
        main([str(tmp_path / 'nope'), str(tmp_path / 'jpg'), 'ucf101'])
    (tmp_path / 'empty' / 'ClassA').mkdir(parents=True)
    with pytest.raises(UserError, match=r'no videos found in .*<class>/<video>\.avi'):
        main([str(tmp_path / 'empty'), str(tmp_path / 'jpg'), 'ucf101'])
    assert not (tmp_path / 'jpg').exists()


def test_find_ffmpeg_falls_back_to_imageio_ffmpeg(monkeypatch):
    import imageio_ffmpeg
    monkeypatch.setattr(script_utils.shutil, 'which', lambda name: None)
    find_ffmpeg.cache_clear()
    try:
        assert find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
    finally:
        find_ffmpeg.cache_clear()
