"""Video files encoded as real datasets encode them: UCF-101's XVID AVIs (MPEG-4 with packed
B-frames, as MEncoder and libxvid write them), MPEG-4 and H.264 with B-frames in AVI, which
stores no presentation times, and H.264 in mp4 and mkv. Every frame that `--file_type video`,
predict_video and verify_dataset read must be ffmpeg's own decode of that frame through
generate_video_jpgs' filter: the frame generate_video_jpgs writes as image_k."""
import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('av')

from conftest import encode, smooth_frames  # noqa: E402
from datasets import video_reader  # noqa: E402
from datasets.loader import FrameError, VideoLoaderPyAV  # noqa: E402
from datasets.video_reader import VideoReadError, VideoReader, count_frames  # noqa: E402
from util_scripts import generate_video_jpgs, predict_video, verify_dataset  # noqa: E402
from util_scripts.utils import find_ffmpeg, passthrough_args  # noqa: E402

SIZE = 48  # generate_video_jpgs --size of these tests
N_FRAMES = 40

# name -> (ffmpeg's codec arguments, file name): as each kind of file is written in the field
ENCODINGS = {
    # libxvid packs a B-frame with the P-frame after it into one AVI chunk, then writes an
    # empty "N-VOP" chunk, as MEncoder's XVID files of UCF-101 are; ffmpeg decodes 2 frames
    # fewer than it was given
    'xvid_packed': (['-c:v', 'libxvid', '-bf', '2', '-g', '12', '-vtag', 'XVID'], 'xvid.avi'),
    'mpeg4_bframes_avi': (['-c:v', 'mpeg4', '-bf', '2', '-g', '12', '-vtag', 'XVID'],
                          'mpeg4.avi'),
    'h264_avi': (['-c:v', 'libx264', '-bf', '2', '-g', '12', '-preset', 'ultrafast'], 'h264.avi'),
    'h264_mp4': (['-c:v', 'libx264', '-bf', '2', '-g', '12', '-preset', 'ultrafast'], 'h264.mp4'),
    'h264_mkv': (['-c:v', 'libx264', '-bf', '3', '-g', '12'], 'h264.mkv'),
}


def has_encoder(name: str) -> bool:
    out = subprocess.run([find_ffmpeg(), '-hide_banner', '-encoders'], capture_output=True,
                         text=True).stdout
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip())


@pytest.fixture(scope='module')
def videos(tmp_path_factory) -> dict:
    """name -> path of a 40-frame 96x72 video, in the class folder `Class` (ucf101 layout)."""
    src = tmp_path_factory.mktemp('real') / 'Class'
    frames = smooth_frames(N_FRAMES, 96, 72)
    paths = {}
    for name, (codec, file_name) in ENCODINGS.items():
        if codec[1] == 'libxvid' and not has_encoder('libxvid'):
            continue  # the test that needs it skips, saying so
        encode(frames, src / file_name, codec)
        paths[name] = src / file_name
    return paths


def video(videos: dict, name: str) -> Path:
    if name not in videos:
        pytest.skip(f'{find_ffmpeg()} has no encoder for {name} (Debian\'s ffmpeg has libxvid)')
    return videos[name]


def ffmpeg_frames(path: Path) -> np.ndarray:
    """[N, H, W, 3]: ffmpeg's decode of every frame through generate_video_jpgs' filter and
    frame-rate mode, as raw RGB instead of JPEG."""
    out = subprocess.run([find_ffmpeg(), '-v', 'error', '-threads', '1', '-i', str(path),
                          '-map', '0:v:0', '-vf', generate_video_jpgs.scale_filter(SIZE),
                          *passthrough_args(), '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'],
                         capture_output=True, check=True).stdout
    height, width = SIZE, 64  # 96x72 scaled to a shorter side of 48
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)


def assert_frames_equal(frames: dict, reference: np.ndarray, where: str) -> None:
    """Each frame k is ffmpeg's frame k: equal but for the last bit a scaler of another ffmpeg
    release may round otherwise (its neighbours are 4 grey levels away on average)."""
    for k, frame in frames.items():
        assert not isinstance(frame, str), f'{where}: frame {k} {frame}'
        difference = np.abs(np.asarray(frame, np.int16) - reference[k - 1])
        assert difference.mean() <= 0.05 and difference.max() <= 8, \
            f'{where}: frame {k} is not ffmpeg\'s frame {k} (mean difference {difference.mean()})'


@pytest.mark.parametrize('name', list(ENCODINGS))
def test_every_frame_is_ffmpegs_frame(videos, name):
    path = video(videos, name)
    reference = ffmpeg_frames(path)
    n = len(reference)
    assert count_frames(path) == n
    loader = VideoLoaderPyAV(size=SIZE)
    frames = loader(path, list(range(1, n + 1)))
    assert len(frames) == n
    assert_frames_equal(dict(enumerate(frames, 1)), reference, name)
    with pytest.raises(FrameError, match=rf'frame {n + 1} of .* is missing: the video '):
        loader(path, [n + 1])


@pytest.mark.parametrize('name', list(ENCODINGS))
def test_clips_in_any_order_are_ffmpegs_frames(videos, name):
    """Training's pattern: clips anywhere in the video, after and before one another (seeks
    forward and back, restarts), on one open reader."""
    path = video(videos, name)
    reference = ffmpeg_frames(path)
    reader = VideoReader(path, SIZE)
    rng = random.Random(0)
    for _ in range(12):
        first = rng.randint(1, len(reference) - 7)
        assert_frames_equal(reader.read(range(first, first + 8), as_array=True), reference,
                            f'{name}, clip at {first}')


def test_frames_out_of_timestamp_order_are_counted_instead(videos, monkeypatch):
    """Whatever the container: a decoder that puts out frames against the order of their
    timestamps makes the reader number them by counting (here H.264 in AVI, as if AVI were
    not known to store decoding times only)."""
    monkeypatch.setattr(video_reader, 'DTS_ONLY_FORMATS', frozenset())
    path = video(videos, 'h264_avi')
    reader = VideoReader(path, SIZE)
    assert not reader.sequential
    reference = ffmpeg_frames(path)
    assert_frames_equal(reader.read(range(1, len(reference) + 1), as_array=True), reference,
                        'h264_avi')
    assert reader.sequential


@pytest.mark.parametrize('name', ['xvid_packed', 'h264_avi', 'h264_mp4'])
def test_predict_video_decodes_the_frames_generate_video_jpgs_writes(videos, name):
    path = video(videos, name)
    reference = ffmpeg_frames(path)
    frames = list(predict_video.decode_video(path, SIZE))
    assert len(frames) == len(reference)
    assert_frames_equal(dict(enumerate(frames, 1)), reference, name)


def test_generate_video_jpgs_writes_a_folder_per_video_file_of_any_extension(videos, tmp_path):
    """kinetics' own .mp4, and .mkv and .avi beside it: the files --file_type video reads."""
    src = video(videos, 'h264_mkv').parent.parent
    generate_video_jpgs.main([str(src), str(tmp_path / 'jpg'), 'kinetics', '--size', str(SIZE),
                              '--n_jobs', '1'])
    folders = sorted(p.name for p in (tmp_path / 'jpg' / 'Class').iterdir())
    # h264.avi / .mp4 / .mkv share the stem h264: the dataset's own extension, .mp4, wins
    assert folders == sorted({Path(f).stem for _, f in ENCODINGS.values()
                              if f.split('.')[0] != 'xvid' or 'xvid_packed' in videos})
    written = sorted((tmp_path / 'jpg' / 'Class' / 'h264').glob('image_*.jpg'))
    assert len(written) == count_frames(src / 'Class' / 'h264.mp4')


def test_verify_dataset_reads_what_training_reads(videos, tmp_path, monkeypatch, capsys):
    """verify_dataset decodes every frame through the reader the loader uses: all readable
    here, and a frame that reader cannot give is reported."""
    root = video(videos, 'h264_avi').parent.parent
    database = {Path(f).stem: {'subset': 'training', 'annotations': {
        'label': 'Class', 'segment': [1, count_frames(path) + 1]}}
        for f, path in ((p.name, p) for p in videos.values()) if path.suffix == '.avi'}
    annotation = tmp_path / 'a.json'
    annotation.write_text(json.dumps({'labels': ['Class'], 'database': database}))
    args = ['--annotation_path', str(annotation), '--video_path', str(root),
            '--file_type', 'video', '--n_jobs', '1']
    verify_dataset.main(args)
    assert capsys.readouterr().out.startswith(f'{len(database)} videos checked: all readable')

    read = VideoReader.read

    def losing_frame_5(self, numbers, as_array=False):
        found = read(self, numbers, as_array)
        if 5 in found and self.path.stem == 'h264':
            found[5] = 'does not decode'
        return found
    monkeypatch.setattr(VideoReader, 'read', losing_frame_5)
    with pytest.raises(SystemExit):
        verify_dataset.main(args)
    assert 'h264 (' in capsys.readouterr().out


def test_errors_say_what_ffmpeg_says(videos, tmp_path):
    path = video(videos, 'h264_mp4')
    truncated = tmp_path / 'truncated.mp4'
    truncated.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    if b'moov' in truncated.read_bytes():
        pytest.skip('this mp4 keeps its index at the start: not truncated before it')
    with pytest.raises(VideoReadError, match='moov atom not found'):
        VideoReader(truncated)


def test_a_video_that_decodes_fewer_frames_than_it_holds_says_so(videos, tmp_path):
    """An AVI whose last packets are damaged: the index counts the packets, a decode finds
    fewer frames, and the messages give the count that decodes."""
    path = video(videos, 'h264_avi')
    import av
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0])
                   if p.size]
    data = bytearray(path.read_bytes())
    for position, size in packets[-4:]:
        data[position:position + size] = b'\xff' * size
    damaged = tmp_path / 'damaged.avi'
    damaged.write_bytes(bytes(data))
    reader = VideoReader(damaged, SIZE)
    n = count_frames(damaged)
    assert n < reader.n_frames == len(packets)  # the index still lists the damaged packets
    frames = reader.read(range(1, reader.n_frames + 1))
    assert frames[reader.n_frames] == f'is missing: the video decodes to {n} frames'
    assert reader.read([n + 1])[n + 1] == f'is missing: the video decodes to {n} frames'
    assert not isinstance(frames[n], str)
