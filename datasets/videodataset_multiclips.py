"""Several clips per video (validation, inference), flattened into one batch by `collate_fn`."""
import copy

import numpy as np

from .videodataset import VideoDataset


def collate_fn(batch):
    """[(clips, targets) per video] -> (array [sum of clips, C, T, H, W], targets).

    Integer targets become an int64 array; others (video ids, segments) stay a list.
    """
    clips = [clip for video_clips, _ in batch for clip in video_clips]
    targets = [target for _, video_targets in batch for target in video_targets]
    clips = np.stack(clips)
    if isinstance(targets[0], (int, np.integer)):
        return clips, np.asarray(targets, dtype='int64')
    return clips, targets


class VideoDatasetMultiClips(VideoDataset):
    """All clips the temporal transform gives for a video: `([clip, ...], [target, ...])`.

    When `target_type` includes 'segment', each clip's target carries its own [first, last + 1]
    frame segment.
    """

    def get_sample(self, index: int):
        """([clip [C, T, H, W], ...], [target, ...]) of video `index`."""
        sample = self.data[index]
        clip_indices = sample['frame_indices']
        if self.temporal_transform is not None:
            clip_indices = self.temporal_transform(clip_indices)
        clips = [self.load_clip(index, indices) for indices in clip_indices]
        segments = [[min(indices), max(indices) + 1] for indices in clip_indices]

        target = self.get_target(sample)
        types = self.target_type if isinstance(self.target_type, list) else [self.target_type]
        if 'segment' not in types:
            return clips, [target] * len(clips)
        if not isinstance(self.target_type, list):
            return clips, segments
        segment_index = types.index('segment')
        targets = []
        for segment in segments:
            targets.append(copy.deepcopy(target))
            targets[-1][segment_index] = segment
        return clips, targets
