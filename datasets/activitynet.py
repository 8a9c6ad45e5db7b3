"""ActivityNet: untrimmed videos, each with annotated segments in seconds (the reference's
datasets/activitynet.py, `--dataset activitynet`).

The annotation json is ActivityNet's own, with each video's frame rate added by
`python -m util_scripts.add_fps_into_activitynet_json`:

    {"taxonomy": [{"nodeId": 1, "parentId": 0, "nodeName": "Sports", ...}, ...],
     "database": {"<video_id>": {"subset": "training" | "validation" | "testing",
                                 "duration": 82.7, "fps": 29.97,
                                 "annotations": [{"label": "Long jump",
                                                  "segment": [12.3, 45.6]}, ...]}, ...}}

Classes: the leaf nodes of "taxonomy" (nodes no other node names as "parentId"), in the order
of the taxonomy, as the reference numbers them; a top-level "labels" list, when there is one,
is taken instead.

Videos: `VIDEO_PATH/v_<video_id>/image_00001.jpg ...` (jpg, the reference's default layout and
what `generate_video_jpgs ... activitynet` writes from the crawler's `v_<video_id>.mp4`),
`VIDEO_PATH/v_<video_id>.hdf5` (hdf5), `VIDEO_PATH/v_<video_id>.mp4` (video; other extensions
too). A name without the `v_` prefix is looked for when the prefixed one is not there (videos
downloaded under their bare YouTube id; add_fps_into_activitynet_json accepts both as well).
The presence of all videos is answered from one listing of VIDEO_PATH.

Samples (one compact record each, `annotation.VideoRecords`):

- training and validation (`is_untrimmed_setting=False`): one per annotated segment. Seconds
  become frames with the video's fps as the reference does: frames [t_begin, t_end) with
  t_begin = floor(start * fps) + 1 and t_end = min(floor(end * fps) + 1, n_frames), n_frames
  the frames of the video on disk (so, as in the reference, a segment never includes the last
  frame of its video). Segments of fewer than MIN_SEGMENT_FRAMES frames after that cut (the
  reference's 8) are skipped and counted. The target is the segment's label; in validation a
  "video" of the clip-averaged video accuracy is one segment.
- inference (`is_untrimmed_setting=True`, the reference's untrimmed setting): one per video,
  all its frames [1, n_frames + 1]; no label (-1), and no fps needed. With target
  ['video_id', 'segment'] each sliding-window clip is targeted (video id, its frames), so
  inference.py writes one averaged result per video.

Frame counts: a frame folder's files whose names contain "image" (the reference's count); an
hdf5 file's frames; a video file's frames by datasets.video_reader's rule (one per packet of
its index, demuxed without decoding; a damaged file may decode fewer: such frames get the
missing-frame treatment of VideoDataset, the nearest readable frame, with a warning). Counts
are kept per process for files that have not changed, so inference after validation does not
count again.

The fps must be the rate of the frames on disk: frames extracted with
`generate_video_jpgs --fps` at another rate than the video's misplace every segment.

Where the reference breaks, this does what it meant: its dataset builder names an undefined
`label` (a NameError before any sample is made) and indexes the first frame of an empty segment
(an IndexError where it meant to skip it); its validation set is one clip per segment while
dataset.py hands it the several-clips collate_fn, and its untrimmed set returns the list of
sliding-window clips through the one-clip __getitem__. Here validation and inference are
`ActivityNetMultiClips` (VideoDatasetMultiClips' clips and targets); `ActivityNet` is one clip
per sample (training).
"""
import math
import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

from tqdm import tqdm

from utils import UserError
from .annotation import RecordsBuilder, VideoRecords, read_json_database
from .layout import FrameFolderLayout
from .videodataset import VideoDataset
from .videodataset_multiclips import VideoDatasetMultiClips

# The reference's shortest segment: shorter ones are skipped.
MIN_SEGMENT_FRAMES = 8
# The crawler's video names: v_<video_id>.mp4.
VIDEO_PREFIX = 'v_'
ADD_FPS = 'python -m util_scripts.add_fps_into_activitynet_json'
# Frame counts are read by this many threads (file system latency, not CPU, is what they wait on).
COUNT_THREADS = 8


def get_class_names(top: dict, annotation_path) -> List[str]:
    """The class names: "labels" if the json has it, else the leaf nodes of "taxonomy" in its
    order (the reference's get_class_labels)."""
    labels = top.get('labels')
    if labels is not None:
        if not isinstance(labels, list) or not all(isinstance(c, str) for c in labels):
            raise UserError(f'annotation file {annotation_path}: "labels" is not a list of names')
        names = labels
    else:
        taxonomy = top.get('taxonomy')
        if taxonomy is None:
            raise UserError(f'annotation file {annotation_path} has no "taxonomy" (whose leaf '
                            'nodes are the classes) and no "labels"')
        if not isinstance(taxonomy, list) or not all(
                isinstance(node, dict) and isinstance(node.get('nodeName'), str)
                and 'nodeId' in node for node in taxonomy):
            raise UserError(f'annotation file {annotation_path}: "taxonomy" is not a list of '
                            'nodes with "nodeId" and "nodeName"')
        try:
            parents = {node.get('parentId') for node in taxonomy}
            names = [node['nodeName'] for node in taxonomy if node['nodeId'] not in parents]
        except TypeError:  # an id that is a list or an object
            raise UserError(f'annotation file {annotation_path}: "taxonomy" has a "nodeId" or '
                            '"parentId" that is not a number or a string') from None
    seen = set()
    for name in names:
        if name in seen:
            raise UserError(f'annotation file {annotation_path}: class {name!r} is named twice')
        seen.add(name)
    if not names:
        raise UserError(f'annotation file {annotation_path} names no classes')
    return names


def segment_frames(start: float, end: float, fps: float, n_frames: int) -> Tuple[int, int]:
    """Frames [t_begin, t_end) of the segment [start, end] seconds of a video of `n_frames`
    frames at `fps`, as the reference turns them: floor(start * fps) + 1, and
    min(floor(end * fps) + 1, n_frames) (t_begin is at least 1)."""
    return max(1, math.floor(start * fps) + 1), min(math.floor(end * fps) + 1, n_frames)


# -- frame counts -------------------------------------------------------------------------------

_frame_counts: Dict[tuple, Union[int, str]] = {}  # (path, mtime, size) -> count or reason


def count_frames(path: Path) -> Union[int, str]:
    """The number of frames of a video (frame folder, hdf5 or video file) as the loaders number
    them, or why it cannot be read (see the module's docstring)."""
    try:
        info = os.stat(path)
    except OSError as e:
        return f'cannot be read ({e.strerror})'
    key = (os.fspath(path), info.st_mtime_ns, info.st_size)
    if key not in _frame_counts:
        try:
            if stat.S_ISDIR(info.st_mode):
                _frame_counts[key] = _count_images(path)
            elif Path(path).suffix == '.hdf5':
                _frame_counts[key] = _count_hdf5(path)
            else:
                _frame_counts[key] = _count_video(path)
        except OSError as e:
            _frame_counts[key] = f'cannot be read ({e.strerror or e})'
    return _frame_counts[key]


def _count_images(folder: Path) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if 'image' in e.name and not e.name.startswith('.'))


def _count_hdf5(path: Path) -> Union[int, str]:
    try:
        import h5py
    except ImportError as e:
        raise UserError('--file_type hdf5 needs h5py: pip install h5py') from e
    with h5py.File(path, 'r') as f:
        for name in ('video', 'video_u'):  # rgb; flow
            if name in f:
                return len(f[name])
    return 'has no dataset "video" (nor "video_u")'


def _count_video(path: Path) -> Union[int, str]:
    """The frames of a video file by its index (its packets, demuxed without decoding: one
    frame each, as datasets.video_reader numbers them)."""
    from .video_reader import VideoReadError, VideoReader
    try:
        reader = VideoReader(path)
    except VideoReadError as e:
        return str(e)
    reader.close()
    return reader.n_frames or 'has no video frames'


def count_all_frames(paths: List[Path], what: str) -> List[Union[int, str]]:
    """count_frames of each path, on COUNT_THREADS threads, with a progress bar for many."""
    if not paths:
        return []
    with ThreadPoolExecutor(min(COUNT_THREADS, len(paths))) as executor:
        return list(tqdm(executor.map(count_frames, paths), total=len(paths), leave=False,
                         desc=f'counting the frames of {what}', unit='video',
                         disable=len(paths) < 1000))


# -- the annotation -----------------------------------------------------------------------------

class _Entry(NamedTuple):
    video_id: str
    annotations: List[Tuple[str, float, float]]  # (label, start s, end s)
    fps: object  # as in the json: checked when it is needed


class _VideoFinder:
    """Where the videos are: `root/v_<id>` (`root/<id>` when that is not there) in the
    layout's form, from one listing of root; or the path a plain formatter (the reference's
    `(root_path, label, video_id) -> path` lambdas, called with label '') gives, when it
    exists."""

    def __init__(self, root_path: Path, formatter: Callable):
        self.root_path, self.formatter = root_path, formatter
        scan = getattr(formatter, 'scan', None)
        self.listing = scan(root_path) if scan is not None else None

    def find(self, video_id: str) -> Optional[Path]:
        if self.listing is None:
            path = Path(self.formatter(self.root_path, '', video_id))
            return path if path.exists() else None
        for name in (VIDEO_PREFIX + video_id, video_id):
            variant = self.listing.get(name)
            if variant is not None:
                return Path(self.formatter.path(self.root_path, '', name, variant))
        return None

    def expected(self, video_id: str) -> Path:
        """The path named in messages about a video that is not there."""
        if self.listing is None:
            return Path(self.formatter(self.root_path, '', video_id))
        return Path(self.formatter(self.root_path, '', VIDEO_PREFIX + video_id))


def read_activitynet(annotation_path: Path, subset: str, root_path: Path, formatter: Callable,
                     untrimmed: bool) -> Tuple[VideoRecords, List[str], dict]:
    """(records of the samples of `subset`, class names, counts and examples for the summary:
    'videos' of the subset, 'missing' (no frames on disk; 'first_missing'), 'unreadable'
    ('first_unreadable': (path, why)), 'empty' (no frames; 'first_empty'), 'segments'
    annotated in the videos that are there, 'short' (fewer than MIN_SEGMENT_FRAMES, skipped)).

    Errors name the file and the video: an entry that is not ActivityNet's, a label that is not
    a class, a segment that is not [start, end] seconds, a video on disk with segments and no
    "fps" (run add_fps_into_activitynet_json).
    """
    annotation_path, root_path = Path(annotation_path), Path(root_path)
    entries: List[_Entry] = []

    def bad(video_id, what):
        return UserError(f'{annotation_path}: video {video_id} {what}')

    def parse_annotation(video_id: str, annotation) -> Tuple[str, float, float]:
        if not isinstance(annotation, dict):
            raise bad(video_id, f'has an annotation that is not a json object: {annotation!r}')
        label = annotation.get('label')
        if label is None:
            raise bad(video_id, f'of subset {subset!r} has an annotation without "label"')
        if not isinstance(label, str):
            raise bad(video_id, f'has a label that is not a string: {label!r}')
        segment = annotation.get('segment')
        try:
            if len(segment) != 2 or any(isinstance(t, bool) for t in segment):
                raise ValueError
            start, end = float(segment[0]), float(segment[1])
            if not (math.isfinite(start) and math.isfinite(end)):
                raise ValueError
        except (TypeError, ValueError):
            raise bad(video_id, f'has a "segment" that is not [start, end] in seconds: '
                                f'{segment!r}') from None
        return label, start, end

    def add(video_id: str, value) -> None:
        if not isinstance(value, dict):
            raise bad(video_id, 'is not a json object')
        if value.get('subset') != subset:
            return
        annotations = value.get('annotations', [])
        if isinstance(annotations, dict):
            raise bad(video_id, 'has one "annotations" object (the trimmed format: a label and a '
                                'frame segment per video), not ActivityNet\'s list of segments '
                                'in seconds: read this file with --dataset kinetics, ucf101, '
                                'hmdb51 or mit')
        if not isinstance(annotations, list):
            raise bad(video_id, f'has "annotations" that are not a list: {annotations!r}')
        parsed = [] if untrimmed else [parse_annotation(video_id, a) for a in annotations]
        entries.append(_Entry(video_id, parsed, value.get('fps')))

    top = read_json_database(annotation_path, add, required=('database',))
    class_names = get_class_names(top, annotation_path)
    class_index = {name: i for i, name in enumerate(class_names)}
    classes = '"labels"' if 'labels' in top else 'the leaf nodes of "taxonomy"'
    for entry in entries:
        for label, _, _ in entry.annotations:
            if label not in class_index:
                raise bad(entry.video_id, f'has label {label!r}, which is not in {classes}')

    finder = _VideoFinder(root_path, formatter)
    counts = {'videos': len(entries), 'missing': 0, 'unreadable': 0, 'empty': 0,
              'segments': 0, 'short': 0}
    present: List[Tuple[_Entry, Path]] = []
    for entry in entries:
        path = finder.find(entry.video_id)
        if path is None:
            counts['missing'] += 1
            counts.setdefault('first_missing', finder.expected(entry.video_id))
            continue
        if entry.annotations:
            fps = entry.fps
            if fps is None:
                raise bad(entry.video_id, f'has no "fps" (its segments are in seconds): add the '
                                          f'frame rates with {ADD_FPS} VIDEO_DIR '
                                          f'{annotation_path}')
            if isinstance(fps, bool) or not isinstance(fps, (int, float)) or \
                    not math.isfinite(fps) or fps <= 0:
                raise bad(entry.video_id, f'has an "fps" that is not a positive number: {fps!r}')
        present.append((entry, path))

    n_frames = count_all_frames([path for _, path in present], f'the {subset} videos')
    records = RecordsBuilder()
    for (entry, path), n in zip(present, n_frames):
        if isinstance(n, str):
            counts['unreadable'] += 1
            counts.setdefault('first_unreadable', (path, n))
            continue
        if n == 0:
            counts['empty'] += 1
            counts.setdefault('first_empty', path)
            continue
        if untrimmed:
            records.append(entry.video_id, -1, 1, n + 1, path)
            continue
        for label, start, end in entry.annotations:
            counts['segments'] += 1
            t_begin, t_end = segment_frames(start, end, entry.fps, n)
            if t_end - t_begin < MIN_SEGMENT_FRAMES:
                counts['short'] += 1
                continue
            records.append(entry.video_id, class_index[label], t_begin, t_end, path)
    return records.build(root_path, formatter, class_names), class_names, counts


# -- the datasets -------------------------------------------------------------------------------

class ActivityNet(VideoDataset):
    """One clip per sample (training): a segment's clip and its label, or with
    `is_untrimmed_setting` a clip of a whole video (see the module's docstring).

    `video_path_formatter`: one of datasets.layout's layouts (FrameFolderLayout, the default;
    FileLayout('.hdf5', ...); VideoFileLayout), looked for flat in `root_path` as
    `v_<video_id>`; or any `(root_path, label, video_id) -> path`, called with label ''.
    The other arguments are VideoDataset's.
    """

    def __init__(self, root_path: Path, annotation_path: Path, subset: str,
                 spatial_transform=None, temporal_transform=None, target_transform=None,
                 video_loader=None, video_path_formatter=FrameFolderLayout(),
                 image_name_formatter=None, target_type='label', strict_data: bool = False,
                 is_untrimmed_setting: bool = False):
        self.is_untrimmed_setting = is_untrimmed_setting
        super().__init__(root_path, annotation_path, subset,
                         spatial_transform=spatial_transform,
                         temporal_transform=temporal_transform,
                         target_transform=target_transform, video_loader=video_loader,
                         video_path_formatter=video_path_formatter,
                         image_name_formatter=image_name_formatter, target_type=target_type,
                         strict_data=strict_data)

    def _make_dataset(self, root_path, annotation_path, subset, video_path_formatter):
        records, class_names, counts = read_activitynet(
            annotation_path, subset, root_path, video_path_formatter, self.is_untrimmed_setting)
        what = getattr(video_path_formatter, 'what', 'frame folder')
        if counts['missing']:
            warnings.warn(f'{counts["missing"]} of {counts["videos"]} {subset} videos have no '
                          f'{what} and are skipped (first: {counts["first_missing"]})',
                          stacklevel=4)
        if counts['unreadable']:
            path, why = counts['first_unreadable']
            warnings.warn(f'{counts["unreadable"]} {subset} videos cannot be read and are '
                          f'skipped (first: {path}: {why})', stacklevel=4)
        if counts['empty']:
            warnings.warn(f'{counts["empty"]} {subset} videos have no frames and are skipped '
                          f'(first: {counts["first_empty"]})', stacklevel=4)
        if counts['short']:
            warnings.warn(f'{counts["short"]} of {counts["segments"]} {subset} segments have '
                          f'fewer than {MIN_SEGMENT_FRAMES} frames and are skipped',
                          stacklevel=4)
        if not len(records):
            found = counts['videos'] - counts['missing']
            raise UserError(f'no usable {subset} samples: {annotation_path} lists '
                            f'{counts["videos"]} {subset} videos, {found} of them with a {what} '
                            f'under {root_path}' + (
                                '' if self.is_untrimmed_setting else
                                f', with {counts["segments"]} segments, {counts["short"]} of '
                                f'them shorter than {MIN_SEGMENT_FRAMES} frames'))
        return records, dict(enumerate(class_names))


class ActivityNetMultiClips(ActivityNet, VideoDatasetMultiClips):
    """All clips the temporal transform gives for a sample (validation: a segment's clips,
    each targeted with its label; inference with `is_untrimmed_setting` and target
    ['video_id', 'segment']: a video's sliding windows), for `collate_fn`."""
