"""Where a video of the annotation is stored: `video_path_formatter`s of the three file types.

A formatter maps (root_path, label, video_id) to the path of the video's frame folder or file,
as the reference's lambdas do; these also say what they point at (`what`, for messages) and
find the files of a whole annotation quickly (one directory listing per folder, not one
`stat` per video).
"""
import os
from pathlib import Path
from typing import Dict, Optional, Sequence

from .video_reader import VIDEO_EXTENSIONS, list_video_files


class DirectoryListings:
    """Names in folders, listed once per folder."""

    def __init__(self):
        self._names: Dict[str, frozenset] = {}

    def names(self, folder) -> frozenset:
        key = os.fspath(folder)
        if key not in self._names:
            try:
                self._names[key] = frozenset(os.listdir(key))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                self._names[key] = frozenset()
        return self._names[key]

    def exists(self, path: Path) -> bool:
        return path.name in self.names(path.parent)


class FrameFolderLayout:
    """`root/<label>/<video_id>/` holding `image_00001.jpg, ...` (`--file_type jpg`)."""
    what = 'frame folder'

    def __call__(self, root_path: Path, label: str, video_id: str) -> Path:
        return Path(root_path) / label / video_id


class FileLayout:
    """`root/<label>/<video_id><suffix>` (`--file_type hdf5`: `.hdf5`)."""

    def __init__(self, suffix: str, what: str):
        self.suffix, self.what = suffix, what

    def __call__(self, root_path: Path, label: str, video_id: str) -> Path:
        return Path(root_path) / label / f'{video_id}{self.suffix}'


class VideoFileLayout:
    """`root/<label>/<video_id>.<ext>`, the first of `extensions` that exists
    (`--file_type video`); `root/<label>/<video_id>` when there is none."""
    what = 'video file'

    def __init__(self, extensions: Sequence[str] = VIDEO_EXTENSIONS):
        self.extensions = tuple(extensions)
        self._files: Dict[str, Dict[str, str]] = {}  # folder -> {stem: file name}

    def __getstate__(self):
        return {'extensions': self.extensions, '_files': {}}

    def find(self, folder: Path, video_id: str) -> Optional[Path]:
        key = os.fspath(folder)
        if key not in self._files:
            self._files[key] = list_video_files(folder, self.extensions)
        name = self._files[key].get(video_id)
        return None if name is None else Path(folder) / name

    def __call__(self, root_path: Path, label: str, video_id: str) -> Path:
        folder = Path(root_path) / label
        return self.find(folder, video_id) or folder / video_id
