"""The videos of one subset of an annotation json, read for datasets of any size.

A Kinetics-700 annotation lists 700,000 videos. `json.load` of it takes 640 MB and 4 s, and a
Python dict with a list of frame numbers per video (the reference's samples) several GB more.
Here the json is read in pieces (`JsonStream`: one database entry at a time, with the C
decoder), and each video of the subset becomes one row of a few numpy arrays (`VideoRecords`,
made by `RecordsBuilder`: first and last frame, class, id, source, own path); the list of frame
numbers is built when a sample is read. Whether its frame folder or file exists is answered from
one listing of each label folder (or of the folder of its own path). A merge of Kinetics-700 and
Moments in Time (util_scripts.merge_json: 1.35 M training videos, each with its own path) builds
in 16 s with 355 MB more peak memory (util_scripts.benchmark_annotation --merged).
"""
import json
import os
import re
from array import array
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from utils import UserError

# The label folder of videos without a class (Kinetics' and MiT's test sets), as the annotation
# scripts and generate_video_jpgs lay them out.
TEST_LABEL = 'test'

_WHITESPACE = re.compile(r'[ \t\n\r]*')
_COLON = re.compile(r'[ \t\n\r]*:[ \t\n\r]*')
_NEXT_MEMBER = re.compile(r'[ \t\n\r]*([,}])')
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

    def items(self):
        """The (key, value) of an object's members, decoded one at a time: members() and
        value() in one step per member, which a database of a million videos needs."""
        self.expect('{')
        if self.peek() == '}':
            self.pos += 1
            return
        while True:
            if not self.eof and len(self.text) - self.pos < self.MARGIN:
                self._read()
            member = self._member()
            if member is None:  # at the end of the buffer, or not json: step by step
                key = self.key()
                member = key, self.value(), self._end_of_member()
            yield member[:2]
            if member[2]:
                return

    def _member(self):
        """(key, value, last) of the member at the position, with the C scanner alone; None
        when that does not decode it whole."""
        text = self.text
        try:
            key, pos = _scan_once(text, _WHITESPACE.match(text, self.pos).end())
            colon = _COLON.match(text, pos)
            if not isinstance(key, str) or colon is None:
                return None
            value, pos = _scan_once(text, colon.end())
        except (StopIteration, json.JSONDecodeError):
            return None
        after = _NEXT_MEMBER.match(text, pos)
        if after is None:
            return None
        self.pos = after.end()
        return key, value, after.group(1) == '}'

    def _end_of_member(self) -> bool:
        """Past the ',' after a member (False) or the '}' of the object (True)."""
        char = self.peek()
        self.pos += 1
        if char == '}':
            return True
        if char != ',':
            self.pos -= 1
            raise self.error("expecting ',' or '}'")
        return False

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
    """The videos of a dataset, one row each: id, class (-1: none), frames [first, end), the
    source it comes from (merged annotations: util_scripts.merge_json), and where the video is
    (the formatter's path, a variant of it such as a file extension, or a path of its own from
    the json's `video_path`, kept as a folder number and a name: the videos of a label folder
    share one folder string).

    `records[i]` is the reference's sample dict (`video`, `segment`, `frame_indices`,
    `video_id`, `label`), built on request; the accessors give one field without the rest.
    """

    def __init__(self, root_path: Path, formatter, class_names: List[str], columns: dict,
                 folders: List[str], source_names: Sequence[str] = ()):
        self.root_path, self.formatter, self.class_names = root_path, formatter, class_names
        self._ids, self._id_ends = columns['ids'], columns['id_ends']
        self.labels, self.starts, self.ends = columns['labels'], columns['starts'], columns['ends']
        self._variants = columns['variants']
        self._folder_numbers, self._folders = columns['folders'], folders
        self._names, self._name_ends = columns['names'], columns['name_ends']
        self.sources, self.source_names = columns['sources'], list(source_names)

    def __len__(self) -> int:
        return len(self.labels)

    @staticmethod
    def _text(blob: bytes, ends: np.ndarray, i: int) -> str:
        begin = int(ends[i - 1]) if i else 0
        return blob[begin:int(ends[i])].decode('utf-8')

    def video_id(self, i: int) -> str:
        return self._text(self._ids, self._id_ends, i)

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def segment(self, i: int) -> List[int]:
        return [int(self.starts[i]), int(self.ends[i])]

    def frame_indices(self, i: int) -> List[int]:
        return list(range(int(self.starts[i]), int(self.ends[i])))

    def label_folder(self, i: int) -> str:
        label = int(self.labels[i])
        return self.class_names[label] if label >= 0 else TEST_LABEL

    def has_own_path(self, i: int) -> bool:
        return int(self._folder_numbers[i]) >= 0

    def video_path(self, i: int) -> Path:
        folder = int(self._folder_numbers[i])
        if folder >= 0:
            return Path(self._folders[folder]) / self._text(self._names, self._name_ends, i)
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


def split_path(path) -> Tuple[str, str]:
    """(folder, name) of a path, as pathlib.Path has them (a trailing '/' does not count)."""
    path = os.fspath(path)
    if path.endswith('/') and path.strip('/'):
        path = path.rstrip('/')
    folder, slash, name = path.rpartition('/')
    return folder or slash or '.', name


class RecordsBuilder:
    """VideoRecords made one row at a time: the one builder of the trimmed datasets
    (read_video_records) and of ActivityNet's samples (one per annotated segment, several of
    them sharing a video and its path).

    Rows go into growing typed arrays (`array`: 4 or 8 bytes per value, no Python object per
    video), which the records then read in place.
    """

    def __init__(self):
        self._ids, self._id_ends = bytearray(), array('q')
        self._labels, self._starts, self._ends = array('i'), array('i'), array('i')
        self._variants, self._sources = array('b'), array('b')
        self._folder_numbers, self._names, self._name_ends = array('i'), bytearray(), array('q')
        self._folders: Dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._labels)

    def append(self, video_id: str, label: int, start: int, end: int, path=None,
               variant: int = -1, source: int = 0) -> None:
        """A sample of frames [start, end) (label -1: none) of the video at `path` (a path, or
        its (folder, name) from `split_path`), or, without one, at the formatter's path
        (`variant`: the layout's variant, -1: the formatter's own path); `source`: the number
        of its source in a merged annotation."""
        self._ids.extend(video_id.encode('utf-8'))
        self._id_ends.append(len(self._ids))
        self._labels.append(label)
        self._starts.append(start)
        self._ends.append(end)
        self._variants.append(variant)
        self._sources.append(source)
        if path is None:
            self._folder_numbers.append(-1)
        else:
            folder, name = path if isinstance(path, tuple) else split_path(path)
            self._folder_numbers.append(self._folders.setdefault(folder, len(self._folders)))
            self._names.extend(name.encode('utf-8'))
        self._name_ends.append(len(self._names))

    def build(self, root_path: Path, formatter, class_names: List[str],
              label_map: Optional[Sequence[int]] = None, source_names: Sequence[str] = (),
              source_map: Optional[Sequence[int]] = None) -> VideoRecords:
        """The records; `label_map[label]` replaces each label when given (-1 stays -1),
        `source_map[source]` each source."""
        def column(values, dtype):
            return np.frombuffer(values, dtype=dtype) if len(values) else np.zeros(0, dtype)
        labels, sources = column(self._labels, np.int32), column(self._sources, np.int8)
        if label_map is not None and len(labels):
            labels = np.array(list(label_map) + [-1], np.int32)[labels]
        if source_map is not None and len(sources):
            sources = np.array(source_map, np.int8)[sources]
        columns = {'ids': self._ids, 'id_ends': column(self._id_ends, np.int64),
                   'labels': labels, 'starts': column(self._starts, np.int32),
                   'ends': column(self._ends, np.int32),
                   'variants': column(self._variants, np.int8),
                   'sources': sources,
                   'folders': column(self._folder_numbers, np.int32),
                   'names': bytes(self._names), 'name_ends': column(self._name_ends, np.int64)}
        return VideoRecords(root_path, formatter, class_names, columns,
                            list(self._folders), source_names)


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
        return self.exists_in(*split_path(path))

    def exists_in(self, folder: str, name: str) -> bool:
        """Whether `folder` holds `name`."""
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._names[folder] = frozenset()
        return name in self._names[folder]


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
                    for video_id, entry in stream.items():
                        on_entry(video_id, entry)
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

    The json is streamed once. A merged annotation (util_scripts.merge_json) also names its
    "sources" (a list of {"name": ...}) and each video's "source"; the records number them.

    Errors name the file and the video: a video without "segment", a label not in "labels",
    a video without label when `needs_label`, a source not in "sources", ActivityNet's
    untrimmed annotations.
    """
    annotation_path, root_path = Path(annotation_path), Path(root_path)
    listings = _Listings(formatter)
    records = RecordsBuilder()
    # label and source names numbered in order of appearance; their indices are known at the end
    label_numbers: Dict[str, int] = {}
    source_numbers: Dict[str, int] = {}
    first_video_of: Dict[tuple, str] = {}
    missing: List[Path] = []
    counts = {'videos': 0, 'missing': 0, 'empty': 0, 'zero_based': 0}

    def bad(video_id, what):
        return UserError(f'{annotation_path}: video {video_id} {what}')

    def number(names: Dict[str, int], name: str, what: str, video_id: str) -> int:
        try:
            return names[name]
        except (KeyError, TypeError):  # new, or not a string
            pass
        if not isinstance(name, str):
            raise bad(video_id, f'has a {what} that is not a string: {name!r}')
        if name not in names:
            names[name] = len(names)
            first_video_of[what, name] = video_id
        return names[name]

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
        label_number = -1 if label is None else number(label_numbers, label, 'label', video_id)
        source = value.get('source')
        source_number = 0 if source is None else number(source_numbers, source, 'source',
                                                        video_id)
        own_path = value.get('video_path')
        folder = label if label is not None else TEST_LABEL
        if own_path is not None:  # strings, not Paths: 3 us less a video (of a merge's million)
            own_path = split_path(own_path)
            variant = -1 if listings.exists_in(*own_path) else None
        else:
            variant = listings.variant(root_path, folder, video_id)
        if variant is None:
            counts['missing'] += 1
            if len(missing) < 1:
                missing.append(Path(*own_path) if own_path is not None
                               else Path(formatter(root_path, folder, video_id)))
            return
        if end <= start:
            counts['empty'] += 1
            return
        records.append(video_id, label_number, start, end, own_path, variant, source_number)

    top = read_json_database(annotation_path, add)
    class_names = _labels(top, annotation_path)
    label_map = _indices(label_numbers, class_names, 'label', '"labels"', first_video_of, bad)
    source_names, source_map = [], None
    if source_numbers:
        source_names = _source_names(top, annotation_path)
        source_map = _indices(source_numbers, source_names, 'source', '"sources"',
                              first_video_of, bad)
    return (records.build(root_path, formatter, class_names, label_map, source_names,
                          source_map), class_names, missing, counts)


def _source_names(top: dict, annotation_path: Path) -> List[str]:
    """The names of a merged annotation's "sources", in their order."""
    sources = top.get('sources')
    if not isinstance(sources, list) or not all(
            isinstance(s, dict) and isinstance(s.get('name'), str) for s in sources):
        raise UserError(f'annotation file {annotation_path}: its videos name a "source", but '
                        'it has no "sources" list of {"name": ...} objects (write it with '
                        'python -m util_scripts.merge_json)')
    return [s['name'] for s in sources]


def _indices(numbers: Dict[str, int], names: List[str], what: str, where: str,
             first_video_of: dict, bad: Callable) -> List[int]:
    """[index in `names` of the name numbered k, for each k]; an error names the first video of
    a name that is not in `names`."""
    index = {name: i for i, name in enumerate(names)}
    for name in numbers:
        if name not in index:
            raise bad(first_video_of[what, name], f'has {what} {name!r}, which is not in {where}')
    return [index[name] for name in numbers]


def read_labels(annotation_path: Path) -> List[str]:
    """The "labels" of an annotation json (its database streamed past, not kept)."""
    return _labels(read_json_database(annotation_path, lambda video_id, entry: None),
                   annotation_path)


def _labels(top: dict, annotation_path: Path) -> List[str]:
    labels = top['labels']
    if not isinstance(labels, list) or not all(isinstance(c, str) for c in labels):
        raise UserError(f'annotation file {annotation_path}: "labels" is not a list of names')
    return labels
