"""Write a small UCF-101-style data set of synthetic videos whose classes differ only in motion.

    python -m util_scripts.make_demo_data DIR [--n_train_per_class 24] [--n_test_per_class 8]

Every video shows full-frame horizontal stripes (a random periodic 1-D profile in two random
colours). The class is how the stripes move from frame to frame:

    DriftUp    move up by `speed` rows per frame      DriftDown  move down by `speed` rows
    Still      do not move                            Jitter     jump to a random place each frame

so one frame cannot tell the classes apart, and random resized crops and horizontal flips (the
training augmentations) keep every class what it is. Written files:

    DIR/videos/<Class>/v_<Class>_g<GG>_c<CC>.avi          (mpeg4, 320x240, 25 fps, 2-3 s)
    DIR/annotations/classInd.txt                          ("1 DriftUp" lines)
    DIR/annotations/trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt

As in UCF-101, a group is either all train or all test; split s tests the s-th block of groups.
A look (stripe profile and colours) is drawn per clip of a group and shared by that clip in every
class, so only motion tells the classes apart. The output is
determined by `--seed`.
"""
import argparse
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from tqdm import tqdm

from utils import UserError, run_cli
from .utils import find_ffmpeg

CLASSES = ('DriftUp', 'DriftDown', 'Still', 'Jitter')
N_SPLITS = 3
TEXTURE_LENGTH = 960  # rows of one period of the stripe profile; frames show a window of it
STRIPE_PERIODS = (20, 80)  # wavelengths (rows) in the profile, long enough for speeds up to 5
SPEEDS = (2, 5)  # rows per frame: below a quarter of the shortest wavelength, so no aliasing
MIN_COLOUR_DISTANCE = 100  # RGB distance between the two stripe colours, so stripes are visible


def make_appearance(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """A periodic stripe profile `[TEXTURE_LENGTH]` in [0, 1] and its two colours `[2, 3]`."""
    # Whole numbers of cycles per TEXTURE_LENGTH rows keep the profile periodic.
    n_cycles = np.arange(TEXTURE_LENGTH // STRIPE_PERIODS[1],
                         TEXTURE_LENGTH // STRIPE_PERIODS[0] + 1)
    rows = np.arange(TEXTURE_LENGTH)[:, None]
    waves = rng.normal(size=len(n_cycles)) * np.cos(
        2 * np.pi * n_cycles * rows / TEXTURE_LENGTH + rng.uniform(0, 2 * np.pi, len(n_cycles)))
    profile = waves.sum(axis=1)
    # tanh sharpens the smooth profile into stripes with fairly flat colours.
    profile = 0.5 + 0.5 * np.tanh(2 * profile / profile.std())
    colours = rng.uniform(0, 255, size=(2, 3))
    while np.linalg.norm(colours[0] - colours[1]) < MIN_COLOUR_DISTANCE:
        colours = rng.uniform(0, 255, size=(2, 3))
    return {'profile': profile, 'colours': colours}


def row_offsets(motion: str, n_frames: int, speed: int, phase: int,
                rng: np.random.Generator) -> np.ndarray:
    """Where in the profile each frame's top row is, `[n_frames]`."""
    t = np.arange(n_frames)
    if motion == 'DriftUp':
        return phase + speed * t
    if motion == 'DriftDown':
        return phase - speed * t
    if motion == 'Still':
        return np.full(n_frames, phase)
    if motion == 'Jitter':
        return rng.integers(0, TEXTURE_LENGTH, n_frames)
    raise ValueError(f'unknown motion {motion!r}')


def render_video(appearance: Dict[str, np.ndarray], offsets: np.ndarray, height: int,
                 width: int) -> np.ndarray:
    """Frames `[T, H, W, 3]` uint8: frame t's row r is the profile at `offsets[t] + r`."""
    rows = (offsets[:, None] + np.arange(height)) % TEXTURE_LENGTH  # [T, H]
    weight = appearance['profile'][rows][..., None]  # [T, H, 1]
    colours = appearance['colours']
    lines = np.round((1 - weight) * colours[0] + weight * colours[1]).astype(np.uint8)  # [T, H, 3]
    return np.repeat(lines[:, :, None, :], width, axis=2)


def write_video(frames: np.ndarray, path: Path, fps: int) -> None:
    """Encode `[T, H, W, 3]` uint8 RGB frames as an mpeg4 .avi (the codec family of UCF-101)."""
    _, height, width, _ = frames.shape
    command = [find_ffmpeg(), '-hide_banner', '-nostdin', '-v', 'error', '-y',
               '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', f'{width}x{height}', '-r', str(fps),
               '-i', '-', '-c:v', 'mpeg4', '-q:v', '3', '-pix_fmt', 'yuv420p', str(path)]
    # One write of the whole clip: subprocess.run(input=...) feeds it in 4 kB steps that hold
    # the GIL, which serialises the parallel encoders.
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(np.ascontiguousarray(frames).tobytes())
        process.stdin.close()
    except BrokenPipeError:
        pass
    stderr = process.stderr.read()
    if process.wait() != 0:
        raise UserError(f'ffmpeg could not write {path}: '
                        f'{stderr.decode("utf-8", "replace").strip()}')


def video_name(class_name: str, group: int, clip: int) -> str:
    return f'v_{class_name}_g{group:02d}_c{clip:02d}'


def tested_groups(split: int, n_groups: int, n_test_groups: int) -> List[int]:
    """The 1-based groups that split `split` (1-based) tests: its block, wrapping around."""
    first = (split - 1) * n_test_groups
    return sorted((first + i) % n_groups + 1 for i in range(n_test_groups))


def write_split_lists(annotation_dir: Path, n_groups: int, n_test_groups: int,
                      clips_per_group: int) -> None:
    """classInd.txt and the train/test lists of every split, in UCF-101's formats."""
    annotation_dir.mkdir(parents=True, exist_ok=True)
    (annotation_dir / 'classInd.txt').write_text(
        ''.join(f'{i} {name}\n' for i, name in enumerate(CLASSES, 1)))
    for split in range(1, N_SPLITS + 1):
        tested = tested_groups(split, n_groups, n_test_groups)
        train, test = [], []
        for index, name in enumerate(CLASSES, 1):
            for group in range(1, n_groups + 1):
                for clip in range(1, clips_per_group + 1):
                    path = f'{name}/{video_name(name, group, clip)}.avi'
                    if group in tested:
                        test.append(f'{path}\n')
                    else:
                        train.append(f'{path} {index}\n')
        (annotation_dir / f'trainlist0{split}.txt').write_text(''.join(train))
        (annotation_dir / f'testlist0{split}.txt').write_text(''.join(test))


def plan_clips(video_dir: Path, n_groups: int, clips_per_group: int, seed: int,
               frame_range: Tuple[int, int]) -> List[dict]:
    """Draw every clip's look and motion from generators seeded by (seed, group, clip, class).

    Clip c of group g has the same look in every class, so the look says nothing about the
    class and a model must learn the motion (looks of one class only would be memorised).
    """
    clips = []
    for group in range(1, n_groups + 1):
        for clip in range(1, clips_per_group + 1):
            appearance = make_appearance(np.random.default_rng([seed, group, clip]))
            for class_index, name in enumerate(CLASSES):
                rng = np.random.default_rng([seed, class_index, group, clip])
                n_frames = int(rng.integers(frame_range[0], frame_range[1] + 1))
                speed = int(rng.integers(SPEEDS[0], SPEEDS[1] + 1))
                phase = int(rng.integers(0, TEXTURE_LENGTH))
                clips.append({
                    'path': video_dir / name / f'{video_name(name, group, clip)}.avi',
                    'appearance': appearance,
                    'offsets': row_offsets(name, n_frames, speed, phase, rng),
                })
    return clips


def write_videos(clips: List[dict], size: Tuple[int, int], fps: int, n_jobs: int) -> None:
    """Render and encode the clips, `n_jobs` ffmpeg processes at a time."""
    width, height = size

    def write_clip(clip: dict) -> None:
        clip['path'].parent.mkdir(parents=True, exist_ok=True)
        write_video(render_video(clip['appearance'], clip['offsets'], height, width),
                    clip['path'], fps)

    with ThreadPoolExecutor(max_workers=n_jobs) as executor:
        list(tqdm(executor.map(write_clip, clips), total=len(clips), unit='video'))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.make_demo_data',
                                     description='Write a small synthetic UCF-101-style data set.')
    parser.add_argument('dir_path', type=Path, help='output directory (videos/, annotations/)')
    parser.add_argument('--n_train_per_class', type=int, default=24,
                        help='training videos per class and split')
    parser.add_argument('--n_test_per_class', type=int, default=8,
                        help='test videos per class and split')
    parser.add_argument('--clips_per_group', type=int, default=2,
                        help='clips sharing one look (a UCF group); divides both counts')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--fps', type=int, default=25)
    parser.add_argument('--min_frames', type=int, default=50, help='shortest video (frames)')
    parser.add_argument('--max_frames', type=int, default=75, help='longest video (frames)')
    parser.add_argument('--n_jobs', type=int, default=os.cpu_count() or 1,
                        help='parallel ffmpeg processes (default: one per CPU core)')
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    for option in ('n_train_per_class', 'n_test_per_class', 'clips_per_group', 'width', 'height',
                   'fps', 'min_frames', 'n_jobs'):
        if getattr(args, option) < 1:
            raise UserError(f'--{option} must be positive, got {getattr(args, option)}')
    for option in ('n_train_per_class', 'n_test_per_class'):
        if getattr(args, option) % args.clips_per_group:
            raise UserError(f'--{option} {getattr(args, option)} is not a multiple of '
                            f'--clips_per_group {args.clips_per_group}')
    if args.max_frames < args.min_frames:
        raise UserError(f'--max_frames {args.max_frames} is below --min_frames {args.min_frames}')
    if args.width % 2 or args.height % 2:
        raise UserError(f'--width and --height must be even (for yuv420p), '
                        f'got {args.width}x{args.height}')


def main(argv=None) -> None:
    args = parse_args(argv)
    check_args(args)
    n_test_groups = args.n_test_per_class // args.clips_per_group
    n_groups = args.n_train_per_class // args.clips_per_group + n_test_groups
    video_dir, annotation_dir = args.dir_path / 'videos', args.dir_path / 'annotations'

    clips = plan_clips(video_dir, n_groups, args.clips_per_group, args.seed,
                       (args.min_frames, args.max_frames))
    write_videos(clips, (args.width, args.height), args.fps, args.n_jobs)
    write_split_lists(annotation_dir, n_groups, n_test_groups, args.clips_per_group)
    print(f'wrote {len(clips)} videos ({len(CLASSES)} classes: {", ".join(CLASSES)}; per class '
          f'and split {args.n_train_per_class} train + {args.n_test_per_class} test) '
          f'to {video_dir}')
    print(f'wrote classInd.txt, trainlist0{{1,2,3}}.txt, testlist0{{1,2,3}}.txt '
          f'to {annotation_dir}')


if __name__ == '__main__':
    run_cli(main)
