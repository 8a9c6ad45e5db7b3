"""The videos of one subset of an annotation json, read for datasets of any size.

A Kinetics-700 annotation lists 700,000 videos. `json.load` of it takes 640 MB and 4 s, and a
Python dict with a list of frame numbers per video (the reference's samples) several GB more.
Here the json is read in pieces (`JsonStream`: one database entry at a time, with the C
decoder), and each video of the subset becomes one row of a few numpy arrays (`VideoRecords`:
first and last frame, class, id); the list of frame numbers is built when a sample is read.
Whether its frame folder or file exists is answered from one listing of each label folder.
"""
import json
import os
import re
from array import array
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from utils import UserError

# The label folder of videos without a class (Kinetics' and MiT's test sets), as the annotation
# scripts and generate_video_jpgs lay them out.
TEST_LABEL = 'test'

_WHITESPACE = re.compile(r'[ \t\n\r]*')
_scan_once = json.JSONDecoder().scan_once  # (text, index) -> (value, end), the C scanner


class JsonStream:
    """A json text read from a file in pieces: values are decoded one at a time, so a large
    object (the database) never has to be in memory as a whole, nor as text."""

    CHUNK = 1 << 20  # characters read at a time
    MARGIN = 1 << 16  # read on when fewer than this are left: values are decoded whole

    def __init__(self, f, name):
        self.f, self.name = f, name
        self.text, self.pos, self.offset, self.eof = '', 0, 0, False

    def _read(self) -> None:
        """Drop what was decoded, read on (at least as much as is buffered: a long value costs
        linear time)."""
        more = self.f.read(max(self.CHUNK, len(self.text) - self.pos))
        self.eof = not more
        self.offset += self.pos
        self.text, self.pos = self.text[self.pos:] + more, 0

    def error(self, what: str) -> UserError:
        return UserError(f'annotation file {self.name} is not valid json: {what} (char '
                         f'{self.offset + self.pos})')

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the end of the file)."""
        while True:
            if not self.eof and len(self.text) - self.pos < self.MARGIN:
                self._read()
            self.pos = _WHITESPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text) or self.eof:
                return self.text[self.pos:self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f'expecting {char!r}')
        self.pos += 1

    def value(self):
        """The next json value."""
        self.peek()
        while True:
            try:
                value, end = _scan_once(self.text, self.pos)
                if end < len(self.text) or self.eof:  # a number could go on after the buffer
                    self.pos = end
                    return value
            except (StopIteration, json.JSONDecodeError) as e:
                if self.eof:
                    detail = e.msg if isinstance(e, json.JSONDecodeError) else 'expecting value'
                    raise self.error(detail) from None
            self._read()

    def key(self) -> str:
        """The next object key and its colon."""
        if self.peek() != '"':
            raise self.error('expecting a property name in double quotes')
        key = self.value()
        self.expect(':')
        return key

    def members(self):
        """The (key, position) of an object's members: the caller decodes each value before
        asking for the next key."""
        self.expect('{')
        if self.peek() == '}':
            self.pos += 1
            return
        while True:
            yield self.key()
            char = self.peek()
            self.pos += 1
            if char == '}':
                return
            if char != ',':
                self.pos -= 1
                raise self.error("expecting ',' or '}'")


class VideoRecords(Sequence):
    """The videos of a dataset, one row each: id, class (-1: none), frames [first, end), and
    where the video is (the formatter's path, a variant of it such as a file extension, or a
    path of its own from the json's `video_path`).

    `records[i]` is the reference's sample dict (`video`, `segment`, `frame_indices`,
    `video_id`, `label`), built on request; the accessors give one field without the rest.
    """

    def __init__(self, root_path: Path, formatter, class_names: List[str], ids: bytes,
                 id_ends: np.ndarray, labels: np.ndarray, starts: np.ndarray,
                 ends: np.ndarray, variants: np.ndarray, own_paths: Dict[int, str]):
        self.root_path, self.formatter, self.class_names = root_path, formatter, class_names
        self._ids, self._id_ends = ids, id_ends
        self.labels, self.starts, self.ends = labels, starts, ends
        self._variants, self._own_paths = variants, own_paths

    def __len__(self) -> int:
        return len(self.labels)

    def video_id(self, i: int) -> str:
        begin = int(self._id_ends[i - 1]) if i else 0
        return self._ids[begin:int(self._id_ends[i])].decode('utf-8')

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def segment(self, i: int) -> List[int]:
        return [int(self.starts[i]), int(self.ends[i])]

    def frame_indices(self, i: int) -> List[int]:
        return list(range(int(self.starts[i]), int(self.ends[i])))

    def label_folder(self, i: int) -> str:
        label = int(self.labels[i])
        return self.class_names[label] if label >= 0 else TEST_LABEL

    def video_path(self, i: int) -> Path:
        if i in self._own_paths:
            return Path(self._own_paths[i])
        variant = int(self._variants[i])
        if variant >= 0:
            return self.formatter.path(self.root_path, self.label_folder(i), self.video_id(i),
                                       variant)
        return Path(self.formatter(self.root_path, self.label_folder(i), self.video_id(i)))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return {'video': self.video_path(i), 'segment': self.segment(i),
                'frame_indices': self.frame_indices(i), 'video_id': self.video_id(i),
                'label': self.label(i)}


class RecordsBuilder:
    """VideoRecords made one row at a time, each with a path of its own (ActivityNet's
    samples: one per annotated segment, several of them sharing a video)."""

    def __init__(self):
        self._ids, self._id_ends = bytearray(), array('q')
        self._labels, self._starts, self._ends = array('i'), array('i'), array('i')
        self._paths: Dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._labels)

    def append(self, video_id: str, label: int, start: int, end: int, path: Path) -> None:
        """A sample of frames [start, end) of the video at `path` (label -1: none)."""
        self._paths[len(self._labels)] = os.fspath(path)
        self._ids.extend(video_id.encode('utf-8'))
        self._id_ends.append(len(self._ids))
        self._labels.append(label)
        self._starts.append(start)
        self._ends.append(end)

    def build(self, root_path: Path, formatter, class_names: List[str]) -> VideoRecords:
        def column(values, dtype):
            return np.frombuffer(values, dtype=dtype).copy() if len(values) else \
                np.zeros(0, dtype)
        n = len(self._labels)
        return VideoRecords(root_path, formatter, class_names, bytes(self._ids),
                            column(self._id_ends, np.int64), column(self._labels, np.int32),
                            column(self._starts, np.int32), column(self._ends, np.int32),
                            np.full(n, -1, np.int8), dict(self._paths))


class _Listings:
    """The videos present in each label folder, from one directory listing per folder:
    {video_id: variant} from a layout with `scan`, else paths answered by listing their
    parent folder."""

    def __init__(self, formatter):
        self.formatter = formatter
        self.scan = getattr(formatter, 'scan', None)
        self._folders: Dict[str, Dict[str, int]] = {}
        self._names: Dict[str, frozenset] = {}

    def variant(self, root_path: Path, label: str, video_id: str) -> Optional[int]:
        """The layout's variant of a present video (-1: the formatter's own path), None when
        the video is not there."""
        if self.scan is not None:
            if label not in self._folders:
                self._folders[label] = self.scan(root_path / label)
            return self._folders[label].get(video_id)
        path = Path(self.formatter(root_path, label, video_id))
        return -1 if self.exists(path) else None

    def exists(self, path: Path) -> bool:
        folder = os.fspath(path.parent)
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._names[folder] = frozenset()
        return path.name in self._names[folder]


def read_json_database(annotation_path: Path, on_entry: Callable[[str, object], None],
                       required: Sequence[str] = ('labels', 'database')) -> dict:
    """Call `on_entry(video_id, entry)` for each member of the json's "database" object, in
    order, decoding one at a time; returns the other top-level members (and "database": True).
    Errors name the file: missing, not json, without the top-level members `required`."""
    lacking = UserError(f'annotation file {annotation_path} has no '
                        + ' and '.join(f'"{key}"' for key in required))
    try:
        f = Path(annotation_path).open(encoding='utf-8')
    except FileNotFoundError as e:
        raise UserError(f'annotation file not found: {annotation_path}') from e
    top = {}
    with f:
        stream = JsonStream(f, annotation_path)
        try:
            if stream.peek() != '{':
                raise lacking
            for key in stream.members():
                if key == 'database':
                    if stream.peek() != '{':
                        raise stream.error('"database" is not an object')
                    for video_id in stream.members():
                        on_entry(video_id, stream.value())
                    top[key] = True
                else:
                    top[key] = stream.value()
            if stream.peek():
                raise stream.error('extra data after the json object')
        except UnicodeDecodeError as e:
            raise UserError(f'annotation file {annotation_path} is not utf-8 text: {e}') from e
    if not all(key in top for key in required):
        raise lacking
    return top


def read_video_records(annotation_path: Path, subset: str, root_path: Path, formatter: Callable,
                       needs_label: bool) -> tuple:
    """(VideoRecords of the videos of `subset` that are there and have frames, the class names,
    [the path of the first video that is not there], counts: 'videos' of the subset,
    'missing', 'empty' (no frames), 'zero_based' (the reference's hdf5 segment [0, n])).

    Errors name the file and the video: a video without "segment", a label not in "labels",
    a video without label when `needs_label`, ActivityNet's untrimmed annotations.
    """
    annotation_path, root_path = Path(annotation_path), Path(root_path)
    listings = _Listings(formatter)
    ids, id_ends = bytearray(), array('q')
    labels, starts, ends, variants = array('i'), array('i'), array('i'), array('b')
    own_paths: Dict[int, str] = {}
    label_numbers: Dict[str, int] = {}  # label names in order of appearance; classes later
    label_names: List[str] = []
    first_video_of_label: Dict[str, str] = {}
    missing: List[Path] = []
    counts = {'videos': 0, 'missing': 0, 'empty': 0, 'zero_based': 0}

    def bad(video_id, what):
        return UserError(f'{annotation_path}: video {video_id} {what}')

    def add(video_id: str, value) -> None:
        if not isinstance(value, dict):
            raise bad(video_id, 'is not a json object')
        if value.get('subset') != subset:
            return
        counts['videos'] += 1
        annotation = value.get('annotations', {})
        if isinstance(annotation, list):
            raise bad(video_id, 'has a list of "annotations" (ActivityNet\'s untrimmed format, '
                                'segments in seconds), which only --dataset activitynet reads; '
                                'the other datasets need one "label" and a frame "segment" '
                                'per video')
        if not isinstance(annotation, dict):
            raise bad(video_id, 'has "annotations" that are not a json object')
        label = annotation.get('label')
        if label is None and needs_label:
            raise bad(video_id, f'of subset {subset!r} has no label')
        if 'segment' not in annotation:
            raise bad(video_id, 'has no "segment"')
        segment = annotation['segment']
        try:
            start, end = int(segment[0]), int(segment[1])
        except (TypeError, ValueError, IndexError, KeyError):
            raise bad(video_id, f'has a "segment" that is not [first, last + 1]: {segment}') \
                from None
        if start == 0 and end > 0:  # the reference's hdf5 segment [0, n]: frames 1..n
            start, end = 1, end + 1
            counts['zero_based'] += 1
        if label is not None:
            if not isinstance(label, str):
                raise bad(video_id, f'has a label that is not a string: {label!r}')
            if label not in label_numbers:
                label_numbers[label] = len(label_names)
                label_names.append(label)
                first_video_of_label[label] = video_id
        own_path = value.get('video_path')
        folder = label if label is not None else TEST_LABEL
        if own_path is not None:
            variant = -1 if listings.exists(Path(own_path)) else None
        else:
            variant = listings.variant(root_path, folder, video_id)
        if variant is None:
            counts['missing'] += 1
            if len(missing) < 1:
                missing.append(Path(own_path) if own_path is not None
                               else Path(formatter(root_path, folder, video_id)))
            return
        if end <= start:
            counts['empty'] += 1
            return
        if own_path is not None:
            own_paths[len(labels)] = str(own_path)
        ids.extend(video_id.encode('utf-8'))
        id_ends.append(len(ids))
        labels.append(-1 if label is None else label_numbers[label])
        starts.append(start)
        ends.append(end)
        variants.append(variant)

    top = read_json_database(annotation_path, add)
    if 'labels' not in top or 'database' not in top:
        raise UserError(f'annotation file {annotation_path} has no "labels" and "database"')
    class_names = top['labels']
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise UserError(f'annotation file {annotation_path}: "labels" is not a list of names')
    class_index = {name: i for i, name in enumerate(class_names)}
    for name in label_names:
        if name not in class_index:
            raise bad(first_video_of_label[name], f'has label {name!r}, which is not in '
                                                  '"labels"')
    to_class = np.array([class_index[name] for name in label_names] + [-1], dtype=np.int32)
    label_array = to_class[np.frombuffer(labels, dtype=np.int32)] if len(labels) else \
        np.zeros(0, np.int32)
    records = VideoRecords(root_path, formatter, class_names, bytes(ids),
                           np.frombuffer(id_ends, dtype=np.int64).copy(), label_array,
                           np.frombuffer(starts, dtype=np.int32).copy(),
                           np.frombuffer(ends, dtype=np.int32).copy(),
                           np.frombuffer(variants, dtype=np.int8).copy(), own_paths)
    return records, class_names, missing, counts
