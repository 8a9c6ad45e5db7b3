"""generate_video_hdf5 and the hdf5 loader: frame k of the annotation is hdf5 index k-1."""
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

h5py = pytest.importorskip('h5py')

from datasets import get_training_data  # noqa: E402
from datasets.loader import FrameError, VideoLoaderHDF5  # noqa: E402
from spatial_transforms import Compose, ToTensor  # noqa: E402
from temporal_transforms import TemporalBeginCrop  # noqa: E402
from util_scripts import generate_video_hdf5, generate_video_jpgs, ucf101_json  # noqa: E402
from util_scripts.utils import find_ffmpeg  # noqa: E402
from utils import UserError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def make_video(path: Path, n_frames: int, size: str = '64x48') -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([find_ffmpeg(), '-v', 'error', '-y', '-f', 'lavfi', '-i',
                    f'testsrc=size={size}:rate=25', '-frames:v', str(n_frames), '-c:v', 'mpeg4',
                    '-pix_fmt', 'yuv420p', str(path)], check=True)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Videos, generate_video_jpgs' frames of them, and the hdf5 files made from each."""
    root = tmp_path_factory.mktemp('hdf5')
    make_video(root / 'videos' / 'ClassA' / 'v_a.avi', 9)
    make_video(root / 'videos' / 'ClassB' / 'v_b.avi', 12, '48x64')
    generate_video_jpgs.main([str(root / 'videos'), str(root / 'jpg'), 'ucf101', '--size', '32'])
    generate_video_hdf5.main([str(root / 'videos'), str(root / 'from_videos'), 'ucf101',
                              '--size', '32', '--n_jobs', '2'])
    generate_video_hdf5.main([str(root / 'jpg'), str(root / 'from_jpgs'), 'ucf101'])
    return root


def jpeg_files(folder: Path):
    return sorted(folder.glob('image_*.jpg'))


@pytest.mark.parametrize('source', ['from_videos', 'from_jpgs'])
def test_hdf5_holds_the_jpegs_generate_video_jpgs_writes(data, source):
    for label, video in (('ClassA', 'v_a'), ('ClassB', 'v_b')):
        jpgs = jpeg_files(data / 'jpg' / label / video)
        with h5py.File(data / source / label / f'{video}.hdf5', 'r') as f:
            frames = f['video']
            assert frames.dtype == h5py.vlen_dtype(np.dtype('uint8'))
            assert len(frames) == len(jpgs) == {'v_a': 9, 'v_b': 12}[video]
            for i, jpg in enumerate(jpgs):
                assert frames[i].dtype == np.uint8
                assert frames[i].tobytes() == jpg.read_bytes()
    assert sorted(p.name for p in (data / source).rglob('*')) == [
        'ClassA', 'ClassB', 'v_a.hdf5', 'v_b.hdf5']


def reader_from_the_layout(path: Path, k: int) -> np.ndarray:
    """The layout, as documented: frame k (1-based) is element k-1 of dataset `video`."""
    with h5py.File(path, 'r') as f:
        return np.asarray(Image.open(io.BytesIO(f['video'][k - 1].tobytes())).convert('RGB'))


def test_our_loader_reads_frame_k_at_index_k_minus_1(data):
    path = data / 'from_videos' / 'ClassA' / 'v_a.hdf5'
    frames = VideoLoaderHDF5()(path, list(range(1, 10)))
    for k, img in enumerate(frames, 1):
        assert np.array_equal(np.asarray(img), reader_from_the_layout(path, k))
        # ... which is the frame generate_video_jpgs wrote as image_0000k.jpg
        jpg = data / 'jpg' / 'ClassA' / 'v_a' / f'image_{k:05d}.jpg'
        assert np.array_equal(np.asarray(img), np.asarray(Image.open(jpg).convert('RGB')))
    for k in (0, 10):
        with pytest.raises(FrameError, match=rf'frame {k} of .*v_a.hdf5 is missing: the file '
                                             r'has 9 frames'):
            VideoLoaderHDF5()(path, [k])


def test_json_from_hdf5_files_and_dataset_clips_equal_the_jpg_dataset(data, tmp_path):
    annotations = tmp_path / 'lists'
    annotations.mkdir()
    (annotations / 'classInd.txt').write_text('1 ClassA\n2 ClassB\n')
    for split in (1, 2, 3):
        (annotations / f'trainlist0{split}.txt').write_text(
            'ClassA/v_a.avi 1\nClassB/v_b.avi 2\n')
        (annotations / f'testlist0{split}.txt').write_text('')
    ucf101_json.main([str(annotations), str(data / 'from_videos'), str(tmp_path / 'h5json')])
    ucf101_json.main([str(annotations), str(data / 'jpg'), str(tmp_path / 'jpgjson')])
    h5_db = json.loads((tmp_path / 'h5json' / 'ucf101_01.json').read_text())['database']
    assert h5_db['v_a']['annotations']['segment'] == [1, 10]
    assert h5_db['v_b']['annotations']['segment'] == [1, 13]
    assert h5_db == json.loads((tmp_path / 'jpgjson' / 'ucf101_01.json').read_text())['database']

    def clips(root, annotation, file_type):
        dataset = get_training_data(root, annotation, 'ucf101', 'rgb', file_type,
                                    Compose([ToTensor()]), TemporalBeginCrop(12))
        return [dataset[i][0] for i in range(len(dataset))]

    for ours, theirs in zip(clips(data / 'from_videos', tmp_path / 'h5json' / 'ucf101_01.json',
                                  'hdf5'),
                            clips(data / 'jpg', tmp_path / 'jpgjson' / 'ucf101_01.json', 'jpg')):
        assert np.array_equal(ours, theirs)


def test_reference_zero_based_segment_reads_the_same_frames(data, tmp_path):
    annotation = tmp_path / 'ref.json'
    annotation.write_text(json.dumps({'labels': ['ClassA'], 'database': {'v_a': {
        'subset': 'training', 'annotations': {'label': 'ClassA', 'segment': [0, 9]}}}}))
    with pytest.warns(UserWarning, match=r"1 training videos have a segment \[0, n\] \(the "
                                         r"reference's kinetics_json for hdf5\)"):
        dataset = get_training_data(data / 'from_videos', annotation, 'ucf101', 'rgb', 'hdf5',
                                    Compose([ToTensor()]), TemporalBeginCrop(9))
    clip, _ = dataset[0]
    path = data / 'from_videos' / 'ClassA' / 'v_a.hdf5'
    expected = np.stack([reader_from_the_layout(path, k) for k in range(1, 10)])
    assert np.array_equal(np.round(clip.transpose(1, 2, 3, 0) * 255), expected)


def test_resumes_redoes_incomplete_files_and_reports_failures(data, tmp_path, capsys):
    dst = tmp_path / 'h5'
    generate_video_hdf5.main([str(data / 'jpg'), str(dst), 'ucf101'])
    done = dst / 'ClassA' / 'v_a.hdf5'
    mtime = done.stat().st_mtime_ns
    # An interrupted reference run: the dataset is made at full length, then filled in order.
    incomplete = dst / 'ClassB' / 'v_b.hdf5'
    with h5py.File(incomplete, 'w') as f:
        video = f.create_dataset('video', (12,), dtype=h5py.vlen_dtype(np.dtype('uint8')))
        video[0] = np.frombuffer(b'partial', dtype=np.uint8)
    (dst / 'ClassB' / '.v_b.hdf5.part').write_bytes(b'left by a killed run')
    capsys.readouterr()

    generate_video_hdf5.main([str(data / 'jpg'), str(dst), 'ucf101', '--n_jobs', '1'])

    assert '2 videos: 1 done, 1 skipped (already complete), 0 failed' in capsys.readouterr().out
    assert done.stat().st_mtime_ns == mtime
    jpgs = jpeg_files(data / 'jpg' / 'ClassB' / 'v_b')
    with h5py.File(incomplete, 'r') as f:
        assert [f['video'][i].tobytes() for i in range(12)] == [p.read_bytes() for p in jpgs]
    assert sorted(p.name for p in (dst / 'ClassB').iterdir()) == ['v_b.hdf5']

    # A frame folder with a gap cannot be packed: named, exit status 1, the others written.
    src = tmp_path / 'gappy'
    for label, video in (('ClassA', 'v_a'), ('ClassB', 'v_b')):
        (src / label / video).mkdir(parents=True)
        for jpg in jpeg_files(data / 'jpg' / label / video):
            (src / label / video / jpg.name).write_bytes(jpg.read_bytes())
    (src / 'ClassB' / 'v_b' / 'image_00004.jpg').unlink()
    result = subprocess.run([sys.executable, '-m', 'util_scripts.generate_video_hdf5', str(src),
                             str(tmp_path / 'out'), 'ucf101'],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert f'failed: {src / "ClassB" / "v_b"}: frames are not numbered 1 to 11: ' \
           'image_00004.jpg is missing' in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        'error: 1 of 2 videos could not be converted (listed above)')
    assert sorted(p.name for p in (tmp_path / 'out').rglob('*.hdf5')) == ['v_a.hdf5']


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match='source directory not found'):
        generate_video_hdf5.main([str(tmp_path / 'nope'), str(tmp_path / 'h5'), 'ucf101'])
    (tmp_path / 'empty' / 'ClassA').mkdir(parents=True)
    with pytest.raises(UserError, match=r'no frame folders or videos found in .*<class>/<video>'
                                        r'/ or <class>/<video>\.avi'):
        generate_video_hdf5.main([str(tmp_path / 'empty'), str(tmp_path / 'h5'), 'ucf101'])
