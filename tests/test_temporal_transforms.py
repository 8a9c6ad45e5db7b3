"""Temporal transforms: expected outputs derived by hand from the reference's rules."""
import random

import pytest

from temporal_transforms import (Compose, LoopPadding, Shuffle, SlidingWindow, TemporalBeginCrop,
                                 TemporalCenterCrop, TemporalEvenCrop, TemporalRandomCrop,
                                 TemporalSubsampling, loop_pad)


def frames(n):
    """1-based frame indices [1, ..., n]."""
    return list(range(1, n + 1))


def test_loop_padding_cycles_through_the_clip():
    assert LoopPadding(5)([1, 2, 3]) == [1, 2, 3, 1, 2]
    assert LoopPadding(8)([1, 2, 3]) == [1, 2, 3, 1, 2, 3, 1, 2]
    assert LoopPadding(4)([7]) == [7, 7, 7, 7]


def test_loop_padding_keeps_long_clips_whole():
    assert LoopPadding(3)([1, 2, 3, 4]) == [1, 2, 3, 4]  # padding only, never truncation
    assert LoopPadding(4)([5, 6, 7, 8]) == [5, 6, 7, 8]


def test_loop_padding_returns_a_new_list():
    clip = [1, 2, 3]
    out = LoopPadding(5)(clip)
    assert clip == [1, 2, 3]  # the reference appends to its argument; we do not
    out.append(99)
    assert clip == [1, 2, 3]
    assert loop_pad(clip, 2) is not clip


def test_begin_crop():
    assert TemporalBeginCrop(4)(frames(10)) == [1, 2, 3, 4]
    assert TemporalBeginCrop(5)([1, 2, 3]) == [1, 2, 3, 1, 2]  # short video: looped


def test_center_crop():
    # n=10: middle entry 10 // 2 = 5, begin 5 - 4 // 2 = 3 -> entries 3..6 -> frames 4..7
    assert TemporalCenterCrop(4)(frames(10)) == [4, 5, 6, 7]
    # n=9, size 5: begin 9 // 2 - 5 // 2 = 2 -> frames 3..7
    assert TemporalCenterCrop(5)(frames(9)) == [3, 4, 5, 6, 7]
    # n=4, size 6: begin max(0, 2 - 3) = 0 -> [1, 2, 3, 4] looped to 6
    assert TemporalCenterCrop(6)(frames(4)) == [1, 2, 3, 4, 1, 2]


def test_random_crop_seeded():
    # n=10, size 4: rand_end = 10 - 4 - 1 = 5; with seed 7, randint(0, 5) draws 2
    # -> entries 2..5 -> frames 3..6
    assert random.Random(7).randint(0, 5) == 2
    random.seed(7)
    assert TemporalRandomCrop(4)(frames(10)) == [3, 4, 5, 6]


def test_random_crop_never_draws_the_last_window():
    # rand_end = n - size - 1 (the reference's choice): with n=10, size 4 starts 0..5,
    # never 6 (frames 7..10)
    random.seed(0)
    starts = {TemporalRandomCrop(4)(frames(10))[0] for _ in range(300)}
    assert starts == {1, 2, 3, 4, 5, 6}
    # n = size + 1: rand_end = 0, so always the first window, never [2..5]
    assert all(TemporalRandomCrop(4)(frames(5)) == [1, 2, 3, 4] for _ in range(20))


def test_random_crop_short_video_loops_and_still_draws_once():
    # n=3 < size 5: rand_end = 0, begin 0, [1, 2, 3] looped;
    # randint(0, 0) still consumes random state
    random.seed(11)
    assert TemporalRandomCrop(5)(frames(3)) == [1, 2, 3, 1, 2]
    after = random.random()
    expected_rng = random.Random(11)
    expected_rng.randint(0, 0)
    assert after == expected_rng.random()


def test_even_crop_spreads_clips():
    # n=20, size 4, 3 samples: stride = ceil((20 - 1 - 4) / 2) = ceil(7.5) = 8 -> starts 1, 9, 17
    assert TemporalEvenCrop(4, 3)(frames(20)) == [[1, 2, 3, 4], [9, 10, 11, 12], [17, 18, 19, 20]]
    # n=10: stride = ceil(5 / 2) = 3 -> starts 1, 4, 7 (10 is a 4th start, cut off by n_samples)
    assert TemporalEvenCrop(4, 3)(frames(10)) == [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]]


def test_even_crop_short_last_clip_is_looped_and_ends_the_list():
    # n=6, size 4, 5 samples: stride = max(1, ceil(1 / 4)) = 1 -> starts 1, 2, 3, 4:
    # range(4, 7) = [4, 5, 6] is short, looped to [4, 5, 6, 4],
    # and ends the list with 4 clips instead of 5
    assert TemporalEvenCrop(4, 5)(frames(6)) == [[1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6],
                                                 [4, 5, 6, 4]]
    # n=5 < size 8: stride = max(1, ceil(-4 / 2)) = 1 -> one clip [1..5] looped to 8
    assert TemporalEvenCrop(8, 3)(frames(5)) == [[1, 2, 3, 4, 5, 1, 2, 3]]


def test_even_crop_one_sample_is_the_clip_at_the_first_frame():
    # the reference divides by zero here; we return the first clip,
    # which any stride would give first
    assert TemporalEvenCrop(4)(frames(10)) == [[1, 2, 3, 4]]
    assert TemporalEvenCrop(4, n_samples=1)(list(range(3, 11))) == [[3, 4, 5, 6]]
    assert TemporalEvenCrop(8, 1)(frames(3)) == [[1, 2, 3, 1, 2, 3, 1, 2]]


def test_even_crop_rejects_zero_samples():
    with pytest.raises(ValueError, match='n_samples'):
        TemporalEvenCrop(4, 0)


def test_sliding_window():
    # stride 0 means stride = size = 4: starts 1, 5, 9;
    # range(9, 11) = [9, 10] is looped and ends the list
    assert SlidingWindow(4)(frames(10)) == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 9, 10]]
    # exact fit: starts 1, 5 -> no padding
    assert SlidingWindow(4)(frames(8)) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    # stride 2 on 7 frames: starts 1, 3, 5, 7; range(5, 8) = [5, 6, 7] is short -> looped,
    # and 7 never starts a clip
    assert SlidingWindow(4, 2)(frames(7)) == [[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 5]]


def test_subsampling():
    assert TemporalSubsampling(3)(frames(10)) == [1, 4, 7, 10]
    assert TemporalSubsampling(1)(frames(3)) == [1, 2, 3]


def test_shuffle_moves_blocks():
    # blocks [1, 2], [3, 4], [5]; with seed 3, shuffling 3 items gives the order [1, 2, 0]
    rng = random.Random(3)
    order = [0, 1, 2]
    rng.shuffle(order)
    assert order == [1, 2, 0]
    random.seed(3)
    assert Shuffle(2)(frames(5)) == [3, 4, 5, 1, 2]


def test_compose_subsampling_then_even_crop_builds_clips_from_start_values():
    # subsample: [1, 3, 5, 7, 9, 11]; n=6, size 3, 2 samples:
    # stride = ceil((6 - 1 - 3) / 1) = 2 -> starts 1, 5 (entries 0 and 2); each clip is
    # range(start, start + 3): consecutive frames, not every other frame
    t = Compose([TemporalSubsampling(2), TemporalEvenCrop(3, 2)])
    assert t(frames(12)) == [[1, 2, 3], [5, 6, 7]]


def test_compose_applies_the_rest_to_each_clip():
    # even crop: stride = ceil((10 - 1 - 4) / 1) = 5 -> clips [1..4], [6..9];
    # each is then looped to 6
    t = Compose([TemporalEvenCrop(4, 2), LoopPadding(6)])
    assert t(frames(10)) == [[1, 2, 3, 4, 1, 2], [6, 7, 8, 9, 6, 7]]
    # sliding window then subsampling of each clip
    t = Compose([SlidingWindow(4), TemporalSubsampling(2)])
    assert t(frames(8)) == [[1, 3], [5, 7]]


def test_compose_train_pipeline_seeded():
    # subsample [1, 3, ..., 19] (n=10), random crop 4:
    # randint(0, 5) with seed 7 is 2 -> entries 2..5
    random.seed(7)
    t = Compose([TemporalSubsampling(2), TemporalRandomCrop(4)])
    assert t(frames(20)) == [5, 7, 9, 11]


@pytest.mark.parametrize('transform', [
    LoopPadding(4), TemporalBeginCrop(4), TemporalCenterCrop(4), TemporalRandomCrop(4),
    TemporalEvenCrop(4, 3), TemporalEvenCrop(4), SlidingWindow(4, 2), TemporalSubsampling(2),
    Shuffle(2),
    Compose([TemporalSubsampling(2), TemporalEvenCrop(4, 3), LoopPadding(6)]),
])
def test_empty_input_gives_empty_output(transform):
    assert transform([]) == []


@pytest.mark.parametrize('transform', [
    LoopPadding(8), TemporalBeginCrop(8), TemporalCenterCrop(8), TemporalRandomCrop(8),
    TemporalEvenCrop(8, 2), SlidingWindow(8, 2), TemporalSubsampling(2), Shuffle(2),
    Compose([SlidingWindow(2), LoopPadding(8)]),
])
def test_input_list_is_not_modified(transform):
    clip = [1, 2, 3]
    transform(clip)
    assert clip == [1, 2, 3]
