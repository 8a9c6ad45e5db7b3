"""verify_dataset: every planted fault is found, a clean tree passes."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from utils import UserError
from PIL import Image

from util_scripts.utils import find_ffmpeg

REPO = Path(__file__).resolve().parents[1]


def write_frames(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(1, n + 1):
        Image.new('RGB', (8, 6), (i * 9, 0, 0)).save(folder / f'image_{i:05d}.jpg')


def entry(label, n, subset='training'):
    return {'subset': subset, 'annotations': {'label': label, 'segment': [1, n + 1]}}


def run(annotation, video_path, *args):
    return subprocess.run([sys.executable, '-m', 'util_scripts.verify_dataset',
                           '--annotation_path', str(annotation), '--video_path', str(video_path),
                           *map(str, args)], cwd=REPO, capture_output=True, text=True)


@pytest.fixture
def jpg_tree(tmp_path):
    root = tmp_path / 'jpg'
    database = {}
    for i in range(6):
        write_frames(root / 'a' / f'ok{i}', 10)
        database[f'ok{i}'] = entry('a', 10, ('training', 'validation')[i % 2])
    write_frames(root / 'test' / 'unlabelled', 10)
    database['unlabelled'] = {'subset': 'testing', 'annotations': {'segment': [1, 11]}}
    annotation = tmp_path / 'a.json'
    annotation.write_text(json.dumps({'labels': ['a', 'b'], 'database': database}))
    return root, annotation, database


def test_clean_tree_passes(jpg_tree):
    root, annotation, _ = jpg_tree
    result = run(annotation, root, '--sample_duration', '10', '--n_jobs', '2')
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ('7 videos checked: all readable, frame counts as annotated, '
                                     'none shorter than 10 frames')


def test_every_planted_fault_is_listed(jpg_tree, tmp_path):
    root, annotation, database = jpg_tree
    database['gone'] = entry('b', 10)  # no folder
    write_frames(root / 'b' / 'corrupt', 10)
    (root / 'b' / 'corrupt' / 'image_00004.jpg').write_bytes(b'\xff\xd8 not a jpeg')
    data = (root / 'b' / 'corrupt' / 'image_00007.jpg').read_bytes()
    (root / 'b' / 'corrupt' / 'image_00007.jpg').write_bytes(data[:len(data) // 2])  # truncated
    database['corrupt'] = entry('b', 10)
    write_frames(root / 'b' / 'short', 4)
    database['short'] = entry('b', 4)
    write_frames(root / 'b' / 'counted_wrong', 9)
    database['counted_wrong'] = entry('b', 12)
    write_frames(root / 'b' / 'gap', 10)
    (root / 'b' / 'gap' / 'image_00005.jpg').unlink()
    (root / 'b' / 'gap' / 'image_00011.jpg').write_bytes(
        (root / 'b' / 'gap' / 'image_00001.jpg').read_bytes())
    database['gap'] = entry('b', 10)
    annotation.write_text(json.dumps({'labels': ['a', 'b'], 'database': database}))

    result = run(annotation, root, '--sample_duration', '8', '--n_jobs', '2')

    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    b = root / 'b'
    assert sorted(lines[:-1]) == sorted([
        f'gone ({b / "gone"}): no frame folder',
        f'corrupt ({b / "corrupt"}): 2 frames do not decode: image_00004.jpg, image_00007.jpg',
        f'short ({b / "short"}): is shorter than --sample_duration 8: 4 frames',
        f'counted_wrong ({b / "counted_wrong"}): has 9 frames, its segment [1, 13] says 12',
        f'gap ({b / "gap"}): frames of its segment are missing: image_00005.jpg',
    ])
    assert lines[-1] == ('12 videos checked: 5 with problems (1 missing, 2 frame count, '
                         '1 undecodable, 1 short)')

    # --subset: only the validation videos, all fine
    result = run(annotation, root, '--subset', 'validation', '--n_jobs', '1')
    assert result.returncode == 0
    assert result.stdout.startswith('3 videos checked: all readable')


def make_video(path: Path, n_frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([find_ffmpeg(), '-v', 'error', '-y', '-f', 'lavfi', '-i',
                    'testsrc=size=32x24:rate=25', '-frames:v', str(n_frames), '-c:v', 'mpeg4',
                    '-g', '4', '-pix_fmt', 'yuv420p', str(path)], check=True)


def test_video_files_and_hdf5(tmp_path):
    pytest.importorskip('av')
    root = tmp_path / 'videos'
    make_video(root / 'a' / 'fine.avi', 12)
    make_video(root / 'a' / 'cut.avi', 12)
    import av
    with av.open(str(root / 'a' / 'cut.avi')) as container:
        positions = [p.pos for p in container.demux(container.streams.video[0]) if p.size]
    data = (root / 'a' / 'cut.avi').read_bytes()
    (root / 'a' / 'cut.avi').write_bytes(data[:positions[7]])  # frames 1..7 left
    (root / 'a' / 'garbage.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42 not really' * 20)
    database = {'fine': entry('a', 12), 'cut': entry('a', 12), 'garbage': entry('a', 12),
                'absent': entry('a', 12)}
    annotation = tmp_path / 'v.json'
    annotation.write_text(json.dumps({'labels': ['a'], 'database': database}))

    result = run(annotation, root, '--file_type', 'video', '--sample_duration', '12')

    assert result.returncode == 1
    lines = sorted(result.stdout.strip().splitlines()[:-1])
    assert lines[0] == f'absent ({root / "a" / "absent"}): no video file'
    assert lines[1] == f'cut ({root / "a" / "cut.avi"}): has 7 frames, its segment [1, 13] says 12'
    assert lines[2].startswith(f'garbage ({root / "a" / "garbage.mp4"}): cannot open: ')
    assert len(lines) == 3
    assert result.stdout.strip().splitlines()[-1] == (
        '4 videos checked: 3 with problems (1 missing, 1 frame count, 1 undecodable)')

    h5py = pytest.importorskip('h5py')
    from util_scripts import generate_video_hdf5
    # every video file is converted, the .mp4 beside ucf101's .avi files too: it fails, and the
    # others are written
    with pytest.raises(UserError, match='1 of 3 videos could not be converted'):
        generate_video_hdf5.main([str(root), str(tmp_path / 'h5'), 'ucf101', '--size', '24'])
    with h5py.File(tmp_path / 'h5' / 'a' / 'fine.hdf5', 'r+') as f:
        f['video'][2] = np.frombuffer(b'broken', dtype=np.uint8)
    del database['garbage']
    annotation.write_text(json.dumps({'labels': ['a'], 'database': database}))
    result = run(annotation, tmp_path / 'h5', '--file_type', 'hdf5')
    assert result.returncode == 1
    assert sorted(result.stdout.strip().splitlines()[:-1]) == [
        f'absent ({tmp_path / "h5" / "a" / "absent.hdf5"}): no hdf5 file',
        f'cut ({tmp_path / "h5" / "a" / "cut.hdf5"}): has 7 frames, its segment [1, 13] says 12',
        f'fine ({tmp_path / "h5" / "a" / "fine.hdf5"}): 1 frame does not decode: frame 3',
    ]


def test_user_errors(tmp_path):
    result = run(tmp_path / 'nope.json', tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: annotation file not found: {tmp_path / "nope.json"}')
    result = run(tmp_path / 'nope.json', tmp_path / 'nowhere')
    assert result.stderr.strip() == f'error: video directory not found: {tmp_path / "nowhere"}'
