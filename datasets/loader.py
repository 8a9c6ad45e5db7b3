"""Frame loaders: a video is a folder of `image_00001.jpg, ...` (or an hdf5 file of encoded frames)."""
import io
from pathlib import Path
from typing import Callable, List, Sequence

from PIL import Image, UnidentifiedImageError

from utils import UserError


def image_name_formatter(index: int) -> str:
    return f'image_{index:05d}.jpg'


class ImageLoaderPIL:
    """Open one image file as RGB."""

    def __call__(self, path: Path) -> Image.Image:
        try:
            with path.open('rb') as f, Image.open(f) as img:
                return img.convert('RGB')
        except UnidentifiedImageError as e:
            raise UserError(f'cannot read frame {path}: not an image, or corrupt') from e
        except (OSError, SyntaxError) as e:  # PIL raises both for truncated or damaged files
            raise UserError(f'cannot read frame {path}: {e}') from e


class VideoLoader:
    """Load the frames `frame_indices` of a frame folder; frames that do not exist are left out."""

    def __init__(self, image_name_formatter: Callable[[int], str] = image_name_formatter,
                 image_loader: Callable[[Path], Image.Image] = None):
        self.image_name_formatter = image_name_formatter
        self.image_loader = image_loader or ImageLoaderPIL()

    def __call__(self, video_path: Path, frame_indices: Sequence[int]) -> List[Image.Image]:
        video = []
        for i in frame_indices:
            image_path = video_path / self.image_name_formatter(i)
            if image_path.exists():
                video.append(self.image_loader(image_path))
        return video


class VideoLoaderHDF5:
    """Load frames from an hdf5 file holding encoded images in dataset `video` (0-based)."""

    def __call__(self, video_path: Path, frame_indices: Sequence[int]) -> List[Image.Image]:
        try:
            import h5py
        except ImportError as e:
            raise UserError('--file_type hdf5 needs h5py: pip install h5py') from e
        with h5py.File(video_path, 'r') as f:
            video_data = f['video']
            return [Image.open(io.BytesIO(video_data[i])).convert('RGB')
                    for i in frame_indices if i < len(video_data)]


class VideoLoaderFlowHDF5:
    """Load optical-flow frames (datasets `video_u`, `video_v`) as RGB images whose B channel repeats v."""

    def __call__(self, video_path: Path, frame_indices: Sequence[int]) -> List[Image.Image]:
        try:
            import h5py
        except ImportError as e:
            raise UserError('--file_type hdf5 needs h5py: pip install h5py') from e
        with h5py.File(video_path, 'r') as f:
            flows = [f['video_u'], f['video_v']]
            video = []
            for i in frame_indices:
                if i >= len(flows[0]):
                    break
                u, v = (Image.open(io.BytesIO(flow[i])).convert('L') for flow in flows)
                video.append(Image.merge('RGB', (u, v, v)))
            return video
