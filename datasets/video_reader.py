"""Frames of a video file, decoded with PyAV: the frames `generate_video_jpgs` would write.

Frame k (1-based) of a video is the k-th frame its decoder outputs, the frame that
`python -m util_scripts.generate_video_jpgs` writes as `image_0000k.jpg` (ffmpeg, one image per
decoded frame). This is the project's one rule for a video file's frames: `count_frames`
counts them, `VideoReader` reads them, and every script that needs a video's frames uses one of
the two. With a `size`, frames go through the filter that script gives ffmpeg (shorter side
scaled to `size`, the other side rounded to an even length, ffmpeg's bicubic scaler), preceded
by the rotation ffmpeg applies for a display matrix; the result is converted to RGB by
libavfilter, so frames equal ffmpeg's own RGB output of that filter, and equal the JPEGs to
within their compression.

A `VideoReader` indexes its file once, by demuxing it without decoding. Where the container
stores presentation timestamps (mp4, mkv, webm, ...), the timestamps of the packets number the
frames and the keyframes among them are the points to seek to: reading seeks to the last
keyframe at or before the first frame wanted and decodes forward. An AVI stores no
presentation times: its packets are in decoding order, and with B-frames (XVID as in UCF-101,
H.264 in AVI) the times PyAV guesses for them are wrong, so such a video is numbered by
counting the frames the decoder outputs from the start of the file, as ffmpeg does; so are
videos whose packets have no or repeated timestamps, and any video whose frames come out of
the decoder against the order of their timestamps (checked on every frame decoded). A reader
keeps its decoding position, so a following request further on (the next clip of a sliding
window) continues without a seek or a restart.
"""
import bisect
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from utils import UserError

# Extensions of video files, in the order they are looked for when a video's file is found by
# its id (`--file_type video`): the one list of what a video file is, for every script.
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v', '.mpg', '.mpeg', '.flv',
                    '.wmv', '.3gp', '.ogv', '.gif')

# Demuxers (PyAV's `container.format.name`) whose packets carry decoding times only: the
# presentation times PyAV reports for them are guesses, wrong for reordered (B-) frames.
DTS_ONLY_FORMATS = frozenset({'avi', 'h264', 'hevc', 'm4v', 'mpegvideo', 'cavsvideo', 'vc1'})


# The extension of each dataset's own videos (UCF-101's AVIs, Kinetics' mp4s): looked for first
# when a stem has several video files.
DATASET_VIDEO_EXTENSIONS = {'ucf101': '.avi', 'hmdb51': '.avi', 'kinetics': '.mp4',
                            'mit': '.mp4', 'activitynet': '.mp4'}


def video_extensions(dataset_name: Optional[str] = None) -> Tuple[str, ...]:
    """VIDEO_EXTENSIONS, the dataset's own extension first."""
    first = DATASET_VIDEO_EXTENSIONS.get(dataset_name)
    return ((first,) if first else ()) + tuple(e for e in VIDEO_EXTENSIONS if e != first)


def import_av():
    try:
        import av
    except ImportError as e:
        raise UserError('reading video files needs PyAV: pip install av') from e
    av.logging.set_level(av.logging.PANIC)  # errors are reported by the callers, per video
    return av


def scale_expression(size: int) -> str:
    """ffmpeg's scale arguments for "shorter side -> `size`, aspect kept, other side even"."""
    return f"'if(gt(iw,ih),-2,{size})':'if(gt(iw,ih),{size},-2)'"


def rotation_filters(rotation: float) -> List[Tuple[str, Optional[str]]]:
    """The filters ffmpeg inserts for a display matrix rotated by `rotation` degrees
    (counter-clockwise, as PyAV reports it), so frames come upright as ffmpeg writes them."""
    theta = (-round(rotation)) % 360  # ffmpeg's clockwise angle
    if abs(theta - 90) < 1:
        return [('transpose', 'clock')]
    if abs(theta - 180) < 1:
        return [('hflip', None), ('vflip', None)]
    if abs(theta - 270) < 1:
        return [('transpose', 'cclock')]
    if 1 < theta < 359:
        return [('rotate', f'{theta}*PI/180')]
    return []


class VideoReadError(Exception):
    """A video file cannot be opened or has no video stream; the message says why."""


def open_video(path: Union[str, Path]):
    """(container, its first video stream), decoding on one thread; VideoReadError says why
    a file cannot be opened."""
    av = import_av()
    try:
        container = av.open(str(path), metadata_errors='ignore')
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise VideoReadError(f'cannot open: {error_text(e)}') from e
    if not container.streams.video:
        container.close()
        raise VideoReadError('no video stream')
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    return container, stream


def decode_frames(container, stream) -> Iterator[object]:
    """The frames of `stream` from the container's position on, as ffmpeg decodes them: a
    packet that does not decode is passed over, damage at the end of the file ends it, and
    empty packets (an AVI's dropped frames, the demuxer's flush packet) give no frame."""
    av = import_av()
    codec = stream.codec_context
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except (av.FFmpegError, OSError):
            break  # the file ends in damage: flush what was decoded
        if packet.size == 0:
            continue  # decoding it would flush the decoder: the end is flushed below
        try:
            yield from codec.decode(packet)
        except av.FFmpegError:
            continue  # a packet that does not decode: its frame is missing
    try:
        yield from codec.decode(None)
    except av.FFmpegError:
        pass


class _Reordered(Exception):
    """The decoder put out frames against the order of their timestamps: they do not number
    the frames, counting does."""


class VideoReader:
    """One open video file: its frame index, and frames decoded on request.

    `read(numbers)` returns {number: PIL RGB image, or the reason it cannot be had (str)};
    `read(numbers, as_array=True)` gives RGB arrays [H, W, 3] uint8 instead of images;
    `frames()` gives every frame in order. Raises VideoReadError from the constructor when
    the file cannot be read at all.
    """

    def __init__(self, path: Union[str, Path], size: Optional[int] = None):
        self.av = import_av()
        self.path = Path(path)
        self.size = size
        self._graph, self._graph_key = None, None
        self._container, self._pass = None, None
        self._open()
        self.n_frames, self._numbers, self._key_numbers, self._key_seek_ts = self._index()
        self.sequential = self._numbers is None
        self._pass: Optional[Iterator[Tuple[Optional[int], object]]] = None  # decoding pass
        self._pos = 0  # number of the last frame the current pass decoded (0: none yet)
        self._decoded = None  # the number of frames the video decodes to, once a pass has
        # met the end of the file (it can be fewer than the packets of a damaged file)

    # -- opening and indexing -------------------------------------------------------------------

    def _open(self) -> None:
        self.close()
        self._container, self._stream = open_video(self.path)

    def _counted(self) -> bool:
        """Whether the frames are numbered by counting them: the container has no
        presentation times and the codec reorders frames."""
        return (self._container.format.name in DTS_ONLY_FORMATS
                and getattr(self._stream.codec_context, 'has_b_frames', True))

    def _index(self):
        """(number of frames, {pts: frame number} or None when frames are counted, keyframe
        numbers, their pts).

        Seeks go to a keyframe's pts: demuxers index presentation times (mp4 with its edit list
        applied, mkv) or times that are equal or earlier (dts); a seek that lands after the
        keyframe anyway is caught when the first frame decoded is beyond the one wanted."""
        keys, stamps = [], []  # pts of the keyframes, of all frames
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:
                    continue  # no frame: the flush packet at the end, an AVI's dropped frame
                if getattr(packet, 'is_discard', False):
                    continue  # dropped by the decoder (e.g. before an mp4 edit list's start)
                stamps.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        except (self.av.FFmpegError, OSError):
            pass  # a truncated or damaged file: the frames before the damage are indexed
        n_frames = len(stamps)
        if (self._counted() or any(s is None for s in stamps)
                or len(set(stamps)) != n_frames):
            return n_frames, None, [], []
        numbers = {pts: k for k, pts in enumerate(sorted(stamps), 1)}
        key_frames = sorted((numbers[pts], pts) for pts in keys)
        return n_frames, numbers, [k for k, _ in key_frames], [t for _, t in key_frames]

    def _count_instead(self) -> None:
        """Number the frames by counting them from now on (see _Reordered)."""
        self.sequential = True
        self._numbers, self._key_numbers, self._key_seek_ts = None, [], []
        self._pass, self._pos, self._decoded = None, 0, None

    def _rewind(self) -> None:
        """Back to the start of the file (reopened: not every file can seek to its start)."""
        self._open()

    def close(self) -> None:
        self._pass = None
        if self._container is not None:
            self._container.close()
            self._container = None

    # -- decoding -------------------------------------------------------------------------------

    def _decode(self) -> Iterator[Tuple[Optional[int], object]]:
        """(frame number, or None when unknown; frame) from the current file position on.
        Raises _Reordered when timestamps number the frames and a frame comes out of the
        decoder with a smaller number than the one before it."""
        last = 0
        for count, frame in enumerate(decode_frames(self._container, self._stream), 1):
            if self.sequential:
                yield count, frame
                continue
            number = self._numbers.get(frame.pts)
            if number is not None:
                if number < last:
                    raise _Reordered()
                last = number
            yield number, frame

    def _start_pass(self, target: int, back: int = 0) -> None:
        """Start decoding at the last keyframe at or before frame `target` (`back` keyframes
        earlier; from the start of the file when there is none)."""
        i = bisect.bisect_right(self._key_numbers, target) - 1 - back
        if self.sequential or i < 0:
            self._rewind()
        else:
            try:
                self._container.seek(self._key_seek_ts[i], stream=self._stream,
                                     backward=True, any_frame=False)
            except (self.av.FFmpegError, OSError):
                self._rewind()
        self._pass = self._decode()
        self._pos = 0

    def _can_continue(self, target: int) -> bool:
        """Whether the current pass reaches `target` without passing a keyframe to seek to."""
        if self._pass is None or self._pos >= target:
            return False
        if self.sequential:
            return True
        i = bisect.bisect_right(self._key_numbers, target) - 1
        return i < 0 or self._key_numbers[i] <= self._pos + 1

    def _advance(self, target: int, wanted: set, found: dict) -> str:
        """Decode until frame `target`, keeping the wanted frames met on the way.

        'reached': the pass got to `target` (or beyond, when `target` does not decode);
        'late': a fresh pass began beyond `target` or gave no frame (a seek landed late);
        'end': the file ended.
        """
        for number, frame in self._pass:
            if number is None:
                continue
            if self._pos == 0 and number > target:
                self._pass = None
                return 'late'
            self._pos = max(self._pos, number)
            if number in wanted and number not in found:
                found[number] = self._rgb(frame)
            if number >= target:
                return 'reached'
        self._pass = None
        if self._pos == 0:
            return 'late'
        self._decoded = self._pos  # the last frame before the end (or the damage that ends it)
        return 'end'

    @property
    def decodable(self) -> int:
        """The frames known to decode: all of them once a pass has met the end, else the
        frames of the index."""
        return self.n_frames if self._decoded is None else self._decoded

    def read(self, numbers: Iterable[int], as_array: bool = False) -> Dict[int, object]:
        """{frame number: PIL RGB image (`as_array`: RGB array [H, W, 3] uint8), or why it
        cannot be had (str)} of the frames `numbers`.

        A frame the decoder skips does not decode; one beyond the frames the file decodes to
        is missing.
        """
        wanted = set(numbers)
        try:
            found = self._read(wanted)
        except _Reordered:
            self._count_instead()
            found = self._read(wanted)
        if not as_array:  # the same images as VideoFrame.to_image(), 0.3 ms a frame faster
            found = {k: v if isinstance(v, str) else to_image(v) for k, v in found.items()}
        return found

    def _read(self, wanted: set) -> Dict[int, object]:
        found: Dict[int, object] = {}
        for target in sorted(wanted):
            if target in found:
                continue
            if target < 1 or target > self.decodable:
                found[target] = f'is missing: {self.length_text()}'
                continue
            if self._can_continue(target):
                self._advance(target, wanted, found)
            else:
                for back in (0, 1, len(self._key_numbers)):
                    self._start_pass(target, back)
                    if self._advance(target, wanted, found) != 'late':
                        break
            if target not in found:
                found[target] = (f'is missing: {self.length_text()}'
                                 if target > self.decodable else 'does not decode')
        return found

    def length_text(self) -> str:
        """'the video has N frames' (N decoded once known, else indexed)."""
        return (f'the video has {self.n_frames} frames' if self._decoded is None
                else f'the video decodes to {self._decoded} frames')

    def frames(self, as_array: bool = False) -> Iterator[object]:
        """Every frame of the video in order, from a decode of the whole file: PIL RGB images
        (`as_array`: RGB arrays [H, W, 3] uint8), the images generate_video_jpgs writes."""
        self._rewind()
        for frame in decode_frames(self._container, self._stream):
            rgb = self._rgb(frame)
            yield rgb if as_array else to_image(rgb)

    # -- conversion -----------------------------------------------------------------------------

    def _rgb(self, frame) -> np.ndarray:
        """The frame as ffmpeg's filter chain of generate_video_jpgs leaves it, as an RGB
        array [H, W, 3] uint8."""
        rotation = getattr(frame, 'rotation', 0) or 0
        key = (frame.width, frame.height, frame.format.name, rotation)
        if key != self._graph_key:
            self._graph = self._build_graph(frame, rotation)
            self._graph_key = key
        self._graph.push(frame)
        return np.ascontiguousarray(self._graph.pull().to_ndarray())

    def _build_graph(self, frame, rotation: float):
        av = self.av
        graph = av.filter.Graph()
        time_base = self._stream.time_base or Fraction(1, 1000)
        nodes = [graph.add_buffer(width=frame.width, height=frame.height,
                                  format=frame.format, time_base=time_base)]
        chain = rotation_filters(rotation)
        if self.size:
            chain.append(('scale', scale_expression(self.size)))
        chain.append(('format', 'rgb24'))
        for name, args in chain:
            nodes.append(graph.add(name, args) if args else graph.add(name))
        nodes.append(graph.add('buffersink'))
        for a, b in zip(nodes, nodes[1:]):
            a.link_to(b)
        graph.configure()
        return graph


def to_image(rgb: np.ndarray) -> Image.Image:
    """An RGB array [H, W, 3] uint8 as a PIL image sharing its memory."""
    return Image.frombuffer('RGB', (rgb.shape[1], rgb.shape[0]), rgb, 'raw', 'RGB', 0, 1)


def error_text(e: BaseException) -> str:
    """One line about a PyAV error, without the file name it repeats, with libav's own last
    message where it gives one: 'Invalid data found when processing input (moov atom not
    found)', as ffmpeg says it."""
    text = getattr(e, 'strerror', None) or str(e) or type(e).__name__
    text = text.splitlines()[0] if text else type(e).__name__
    log = str(e).partition('last error log: ')[2].strip()
    if log:
        log = re.sub(r'^\[[^\]]*\]\s*', '', log.splitlines()[0]).strip()  # "[mov,mp4,...] "
        if log and log not in text:
            text = f'{text} ({log})'
    return text


def count_frames(path: Union[str, Path]) -> int:
    """The number of frames a video decodes to: what generate_video_jpgs writes, and the
    frames `VideoReader` numbers. Raises VideoReadError when the file cannot be opened or
    yields no frame."""
    container, stream = open_video(path)
    try:
        n = sum(1 for _ in decode_frames(container, stream))
    finally:
        container.close()
    if n == 0:
        raise VideoReadError('no frame decodes')
    return n


def find_video_file(folder: Path, video_id: str,
                    extensions: Sequence[str] = VIDEO_EXTENSIONS) -> Optional[Path]:
    """`folder/<video_id><ext>` for the first of `extensions` that exists, else None."""
    for ext in extensions:
        path = folder / f'{video_id}{ext}'
        if path.is_file():
            return path
    return None


def list_video_files(folder: Path, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> Dict[str, str]:
    """{stem: file name} of the video files of a folder, the first extension of
    `extensions` winning when a stem has several; {} for a missing folder."""
    rank = {ext: i for i, ext in enumerate(extensions)}
    best: Dict[str, Tuple[int, str]] = {}
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    with entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            r = rank.get(ext.lower())
            if r is not None and not entry.name.startswith('.') and (
                    stem not in best or r < best[stem][0]):
                best[stem] = (r, entry.name)
    return {stem: name for stem, (_, name) in best.items()}
