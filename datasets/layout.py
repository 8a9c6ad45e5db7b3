"""Where a video of the annotation is stored: the `video_path_formatter`s of the file types.

A formatter maps (root_path, label, video_id) to the path of the video's frame folder or file,
as the reference's lambdas do. These also say what they point at (`what`, for messages) and
which kind of video (`kind`: 'jpg', 'hdf5', 'video', as datasets.loader's `path_kind` tells a
path's), and list the videos of a label folder at once (`scan`: {video_id: variant}, one
directory listing instead of one `stat` per video); `path(root, label, video_id, variant)`
is the path of a video found by `scan` (the variant of a video file is its extension).
"""
import os
from pathlib import Path
from typing import Dict, Optional, Sequence

from .video_reader import VIDEO_EXTENSIONS, list_video_files


class FrameFolderLayout:
    """`root/<label>/<video_id>/` holding `image_00001.jpg, ...` (`--file_type jpg`)."""
    what, kind = 'frame folder', 'jpg'

    def __call__(self, root_path: Path, label: str, video_id: str) -> Path:
        return Path(root_path) / label / video_id

    def path(self, root_path: Path, label: str, video_id: str, variant: int) -> Path:
        return Path(root_path) / label / video_id

    def scan(self, folder: Path) -> Dict[str, int]:
        try:
            with os.scandir(folder) as entries:
                return {e.name: 0 for e in entries if e.is_dir()}
        except OSError:
            return {}


class FileLayout:
    """`root/<label>/<video_id><suffix>` (`--file_type hdf5`: `.hdf5`)."""

    def __init__(self, suffix: str, what: str):
        self.suffix, self.what = suffix, what
        self.kind = suffix.lstrip('.')

    def __call__(self, root_path: Path, label: str, video_id: str) -> Path:
        return Path(root_path) / label / f'{video_id}{self.suffix}'

    def path(self, root_path: Path, label: str, video_id: str, variant: int) -> Path:
        return self(root_path, label, video_id)

    def scan(self, folder: Path) -> Dict[str, int]:
        n = len(self.suffix)
        try:
            with os.scandir(folder) as entries:
                return {e.name[:-n]: 0 for e in entries
                        if e.name.endswith(self.suffix) and not e.is_dir()}
        except OSError:
            return {}


class VideoFileLayout:
    """`root/<label>/<video_id>.<ext>`, the first of `extensions` that exists
    (`--file_type video`); `root/<label>/<video_id>` when there is none."""
    what, kind = 'video file', 'video'

    def __init__(self, extensions: Sequence[str] = VIDEO_EXTENSIONS):
        self.extensions = tuple(extensions)
        self.suffixes = list(self.extensions)  # variants: suffixes as spelt in the folders
        self._files: Dict[str, Dict[str, str]] = {}  # folder -> {stem: file name}, for find

    def __getstate__(self):
        return {**self.__dict__, '_files': {}}

    def find(self, folder: Path, video_id: str) -> Optional[Path]:
        """The video file of `video_id` in `folder` (the listing of the folder is kept)."""
        key = os.fspath(folder)
        if key not in self._files:
            self._files[key] = list_video_files(folder, self.extensions)
        name = self._files[key].get(video_id)
        return None if name is None else Path(folder) / name

    def __call__(self, root_path: Path, label: str, video_id: str) -> Path:
        folder = Path(root_path) / label
        for ext in self.extensions:
            path = folder / f'{video_id}{ext}'
            if path.is_file():
                return path
        return folder / video_id

    def path(self, root_path: Path, label: str, video_id: str, variant: int) -> Path:
        return Path(root_path) / label / f'{video_id}{self.suffixes[variant]}'

    def scan(self, folder: Path) -> Dict[str, int]:
        found = {}
        for stem, name in list_video_files(folder, self.extensions).items():
            suffix = name[len(stem):]
            if suffix not in self.suffixes:  # e.g. .AVI
                self.suffixes.append(suffix)
            found[stem] = self.suffixes.index(suffix)
        return found
