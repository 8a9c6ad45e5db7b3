"""Merge the annotation jsons of several data sets into one, for pretraining on all of them
(Kinetics-700 + Moments in Time: 700 + 339 = 1039 classes, Kataoka et al. 2020).

    python -m util_scripts.merge_json DST_JSON --source A.json VIDEO_DIR_A \
        --source B.json VIDEO_DIR_B [...] [--names A B ...] [--same SAME.tsv]

The merged "labels" are A's classes, then B's, ... in their orders. A class name that more than
one source has stays one class per source: each is renamed `<source name>:<class>` (the source
names are the json files' stems unless `--names` gives them), unless a `--same` file says
they are one class. Every video keeps its subset (training, validation, testing), its segment
and its frames where they are: its "video_path" is written out (absolute), whichever layout its
source has (`VIDEO_DIR/<label>/<video_id>` as a frame folder, an .hdf5 file or a video file;
unlabelled videos under `VIDEO_DIR/test/`; a "video_path" of the source's own is kept), and its
"source" names its source. A video id that an earlier source already has becomes
`<source name>:<video_id>`. The top-level "sources" lists each source's name, json, video
directory, classes and videos.

`--same` file: one merged class per line, the classes it merges as tab-separated
`<source name>:<class>` fields; the merged class takes the first field's place and name:

    kinetics_700:juggling balls<TAB>mit_json:juggling

A source whose videos cannot be found in its directory (not one of them, e.g. ActivityNet's flat
`v_<id>` folders) is refused, as is ActivityNet's untrimmed format (segments in seconds).
"""
import argparse
import json
import os
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

from tqdm import tqdm

from datasets.annotation import TEST_LABEL, JsonStream, read_json_database
from datasets.video_reader import list_video_files
from utils import UserError, run_cli

KIND_NAMES = {'jpg': 'frame folders', 'hdf5': 'hdf5 files', 'video': 'video files',
              'own': 'paths of their own'}


class Source(NamedTuple):
    name: str
    annotation_path: Path
    video_dir: Path
    labels: List[str]


class _Folders:
    """The videos of each label folder of a video directory, from one listing per folder:
    {video_id: (kind, path)}, frame folders before .hdf5 files before video files (as the
    annotation scripts look for them)."""

    def __init__(self, video_dir: Path):
        self.video_dir = video_dir
        self._folders: Dict[str, Dict[str, Tuple[str, str]]] = {}

    def find(self, label: str, video_id: str) -> Optional[Tuple[str, str]]:
        if label not in self._folders:
            self._folders[label] = self._scan(self.video_dir / label)
        return self._folders[label].get(video_id)

    @staticmethod
    def _scan(folder: Path) -> Dict[str, Tuple[str, str]]:
        found = {stem: ('video', os.path.join(folder, name))
                 for stem, name in list_video_files(folder).items()}
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return found
        for e in entries:
            if e.name.endswith('.hdf5') and not e.is_dir():
                found[e.name[:-len('.hdf5')]] = ('hdf5', e.path)
        for e in entries:
            if e.is_dir():
                found[e.name] = ('jpg', e.path)
        return found


def read_labels_first(annotation_path: Path) -> List[str]:
    """The "labels" of an annotation json: at once when they come before the database (as the
    annotation scripts write them), else after streaming past it."""
    try:
        f = Path(annotation_path).open(encoding='utf-8')
    except FileNotFoundError as e:
        raise UserError(f'annotation file not found: {annotation_path}') from e
    with f:
        stream = JsonStream(f, annotation_path)
        if stream.peek() != '{':
            raise stream.error('expecting an object')
        for key in stream.members():
            if key == 'database' and stream.peek() == '{':
                for _ in stream.members():
                    stream.value()
                continue
            value = stream.value()
            if key == 'labels':
                if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                    raise UserError(f'annotation file {annotation_path}: "labels" is not a '
                                    'list of names')
                return value
    raise UserError(f'annotation file {annotation_path} has no "labels"')


def source_names(annotation_paths: List[Path], names: Optional[List[str]]) -> List[str]:
    """`names`, or the stems of the json files (a repeated stem gets _2, _3, ...)."""
    if names is not None:
        if len(names) != len(annotation_paths):
            raise UserError(f'--names gives {len(names)} names for {len(annotation_paths)} '
                            '--source options')
        if len(set(names)) != len(names) or any(':' in n or not n for n in names):
            raise UserError(f'--names {" ".join(names)}: the names must be distinct, not empty '
                            'and without ":"')
        return list(names)
    result = []
    for path in annotation_paths:
        stem, k = path.stem.replace(':', '_'), 2
        name = stem
        while name in result:
            name, k = f'{stem}_{k}', k + 1
        result.append(name)
    return result


def read_same(path: Optional[Path], sources: List[Source]) -> Dict[Tuple[int, str], int]:
    """{(source number, class): number of its group} of a --same file (see the module's
    docstring); errors name the file and line."""
    if path is None:
        return {}
    numbers = {s.name: i for i, s in enumerate(sources)}
    classes = [set(s.labels) for s in sources]
    groups: Dict[Tuple[int, str], int] = {}
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except FileNotFoundError as e:
        raise UserError(f'--same file not found: {path}') from e
    for line_number, line in enumerate(lines, 1):
        fields = [f for f in line.split('\t') if f.strip()]
        if not fields:
            continue
        if len(fields) < 2:
            raise UserError(f'--same {path} line {line_number}: expected two or more '
                            'tab-separated <source>:<class> fields')
        for field in fields:
            name, colon, label = field.strip().partition(':')
            if not colon or name not in numbers:
                raise UserError(f'--same {path} line {line_number}: {field!r} is not '
                                f'<source>:<class> with a source of {", ".join(numbers)}')
            key = (numbers[name], label)
            if label not in classes[key[0]]:
                raise UserError(f'--same {path} line {line_number}: source {name} has no '
                                f'class {label!r}')
            if key in groups:
                raise UserError(f'--same {path} line {line_number}: {field!r} is merged twice')
            groups[key] = line_number
    return groups


def merge_labels(sources: List[Source], same: Dict[Tuple[int, str], int]) -> tuple:
    """(merged class names, {(source number, class): merged name}, renamed: [merged names of
    the classes kept apart])."""
    first_of_group: Dict[int, Tuple[int, str]] = {}
    kept: List[Tuple[int, str]] = []  # (source, class) of each merged class, in order
    for s, source in enumerate(sources):
        for label in source.labels:
            group = same.get((s, label))
            if group is not None and group in first_of_group:
                continue
            if group is not None:
                first_of_group[group] = (s, label)
            kept.append((s, label))
    n_named = {}
    for _, label in kept:
        n_named[label] = n_named.get(label, 0) + 1
    final = {key: (f'{sources[key[0]].name}:{key[1]}' if n_named[key[1]] > 1 else key[1])
             for key in kept}
    names = [final[key] for key in kept]
    if len(set(names)) != len(names):
        taken = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f'merged class names clash after renaming: {taken[:3]}; rename a source '
                        'with --names')
    mapping = dict(final)
    for key, group in same.items():
        mapping[key] = final[first_of_group[group]]
    renamed = [final[key] for key in kept if n_named[key[1]] > 1]
    return names, mapping, renamed


class Refused(UserError):
    """A source merge_json cannot merge; the message names it."""


def refuse(number: int, source: Source, why: str) -> Refused:
    return Refused(f'source {number} {source.name} ({source.annotation_path}, '
                   f'{source.video_dir}): {why}')


def merge_source(number: int, source: Source, labels: Dict[Tuple[int, str], str],
                 seen_ids: set, write) -> dict:
    """Write the entries of one source (`write(video_id, entry)`); its summary."""
    folders = _Folders(source.video_dir)
    summary = {'name': source.name, 'annotation': str(source.annotation_path.resolve()),
               'video_path': str(source.video_dir.resolve()),
               'n_classes': len(source.labels), 'videos': {}, 'kinds': {}, 'missing': 0,
               'first_missing': None, 'renamed_ids': 0}
    bar = tqdm(unit='video', desc=f'source {number} {source.name}', leave=False,
               disable=None)  # no bar but on a terminal: a refusal stays one line in a log

    def add(video_id: str, entry) -> None:
        bar.update()
        if not isinstance(entry, dict) or not isinstance(entry.get('annotations', {}), dict):
            if isinstance(entry, dict) and isinstance(entry.get('annotations'), list):
                raise refuse(number, source, f'video {video_id} has a list of "annotations" '
                             '(ActivityNet\'s untrimmed format, segments in seconds): merge_json '
                             'merges annotations of one label and frame segment per video')
            raise refuse(number, source, f'video {video_id} is not an entry of an annotation '
                                         '(an object with "subset" and "annotations")')
        annotations = dict(entry.get('annotations', {}))
        label = annotations.get('label')
        if label is not None:
            if (number - 1, label) not in labels:
                raise refuse(number, source, f'video {video_id} has label {label!r}, which is '
                                             'not in its "labels"')
            annotations['label'] = labels[number - 1, label]
        if entry.get('video_path') is not None:
            kind, path = 'own', os.path.abspath(entry['video_path'])
        else:
            found = folders.find(TEST_LABEL if label is None else label, video_id)
            if found is None:
                summary['missing'] += 1
                kind = None
                path = os.path.join(source.video_dir.resolve(),
                                    TEST_LABEL if label is None else label, video_id)
                summary['first_missing'] = summary['first_missing'] or path
            else:
                kind, path = found[0], os.path.abspath(found[1])
        if kind is not None:
            summary['kinds'][kind] = summary['kinds'].get(kind, 0) + 1
        subset = entry.get('subset')
        summary['videos'][subset] = summary['videos'].get(subset, 0) + 1
        new_id = video_id
        if new_id in seen_ids:
            new_id = f'{source.name}:{video_id}'
            summary['renamed_ids'] += 1
            if new_id in seen_ids:
                raise refuse(number, source, f'video ids {video_id!r} and {new_id!r} are both '
                                             'taken by earlier sources')
        seen_ids.add(new_id)
        write(new_id, {**entry, 'annotations': annotations, 'video_path': path,
                       'source': source.name})

    with bar:
        try:
            read_json_database(source.annotation_path, add)
        except Refused:
            raise
        except UserError as e:  # not json, no database: the file's own error, and the source
            raise refuse(number, source, str(e)) from None
    total = sum(summary['videos'].values())
    if total and not summary['kinds']:
        raise refuse(number, source, f'none of its {total} videos is in the video directory as '
                     '<label>/<video_id> (a frame folder, .hdf5 or video file), e.g. '
                     f'{summary["first_missing"]}: give the directory the videos\' label '
                     'folders are in')
    return summary


def describe(number: int, summary: dict) -> str:
    videos = ', '.join(f'{n} {subset}' for subset, n in summary['videos'].items())
    kinds = ', '.join(f'{n} {KIND_NAMES[k]}' for k, n in summary['kinds'].items())
    line = (f'source {number} {summary["name"]}: {summary["n_classes"]} classes, videos: '
            f'{videos or "none"} ({kinds or "none found"})')
    if summary['renamed_ids']:
        line += (f'; {summary["renamed_ids"]} video ids also in an earlier source renamed '
                 f'"{summary["name"]}:<video_id>"')
    if summary['missing']:
        line += (f'; {summary["missing"]} videos not found, kept (the datasets skip them), '
                 f'first: {summary["first_missing"]}')
    return line


def merge(dst_path: Path, sources: List[Source], same_path: Optional[Path] = None) -> dict:
    """Write the merged annotation of `sources` to `dst_path`; print what is in it per source.
    Returns the top-level "sources" written."""
    for number, source in enumerate(sources, 1):  # before an hour spent on the others
        if not source.video_dir.is_dir():
            raise refuse(number, source, 'video directory not found')
    same = read_same(same_path, sources)
    names, labels, renamed = merge_labels(sources, same)
    summaries, seen_ids = [], set()
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    partial = dst_path.with_name(dst_path.name + '.partial')
    with partial.open('w', encoding='utf-8') as f:
        f.write('{"labels": ' + json.dumps(names) + ', "database": {')
        first = [True]

        def write(video_id: str, entry: dict) -> None:
            f.write(('' if first[0] else ', ') + json.dumps(video_id) + ': ' + json.dumps(entry))
            first[0] = False
        try:
            for number, source in enumerate(sources, 1):
                summaries.append(merge_source(number, source, labels, seen_ids, write))
        except BaseException:
            f.close()
            partial.unlink()
            raise
        keys = ('name', 'annotation', 'video_path', 'n_classes', 'videos')
        f.write('}, "sources": ' + json.dumps([{k: s[k] for k in keys} for s in summaries])
                + '}')
    partial.replace(dst_path)
    for number, summary in enumerate(summaries, 1):
        print(describe(number, summary))
    if renamed:
        examples = ', '.join(repr(n) for n in renamed[:4])
        print(f'{len(renamed)} classes of names in more than one source are kept apart as '
              f'"<source>:<class>": {examples}{", ..." if len(renamed) > 4 else ""}')
    if same:
        print(f'{len(same) - len(set(same.values()))} classes merged into others by --same '
              f'{same_path}')
    n_videos = sum(sum(s['videos'].values()) for s in summaries)
    print(f'wrote {dst_path}: {len(names)} classes, {n_videos} videos from {len(sources)} '
          f'sources (train with --n_classes {len(names)}; fine-tune from its weights with '
          f'--n_pretrain_classes {len(names)})')
    return summaries


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m util_scripts.merge_json',
        description='Merge annotation jsons (with their video directories) into one.')
    parser.add_argument('dst_path', type=Path, help='path of the merged json to write')
    parser.add_argument('--source', nargs=2, action='append', required=True, type=Path,
                        metavar=('JSON', 'VIDEO_DIR'),
                        help='an annotation json and the directory of its videos '
                             '(<label>/<video_id>); repeat for each source, in class order')
    parser.add_argument('--names', nargs='+', default=None,
                        help='a name per source (default: the json files\' stems), used for '
                             'classes and video ids of one name in several sources')
    parser.add_argument('--same', type=Path, default=None,
                        help='file of classes of different sources to merge into one: a line '
                             'per merged class, tab-separated <source>:<class> fields')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if len(args.source) < 2:
        raise UserError('--source: give two or more (JSON, VIDEO_DIR) pairs to merge')
    if len(args.source) > 127:
        raise UserError(f'--source: at most 127 sources, got {len(args.source)}')
    names = source_names([json_path for json_path, _ in args.source], args.names)
    sources = []
    for number, ((json_path, video_dir), name) in enumerate(zip(args.source, names), 1):
        try:
            labels = read_labels_first(json_path)
        except UserError as e:
            raise UserError(f'source {number} {name}: {e}') from None
        if len(set(labels)) != len(labels):
            raise UserError(f'source {number} {name} ({json_path}): a class is named twice in '
                            'its "labels"')
        sources.append(Source(name, json_path, video_dir, labels))
    if args.dst_path.resolve() in {s.annotation_path.resolve() for s in sources}:
        raise UserError(f'{args.dst_path} is one of the sources: write the merge elsewhere')
    merge(args.dst_path, sources, args.same)


if __name__ == '__main__':
    run_cli(main)
