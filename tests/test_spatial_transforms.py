"""Spatial transforms on tiny images whose pixel values name their location, so crops can be
identified."""
import math
import random

import numpy as np
import pytest
from PIL import Image, ImageEnhance

import spatial_transforms as st
from spatial_transforms import (CenterCrop, ColorJitter, Compose, CornerCrop, MultiScaleCornerCrop,
                                Normalize, PickFirstChannels, RandomHorizontalFlip,
                                RandomResizedCrop, Resize, ScaleValue,
                                ToArray, ToTensor, get_mean_std)


def grid(width=8, height=6, offset=0):
    """[H, W, 3] uint8 array: R = 10 * row + col (+ offset), G = R + 100, B = 255 - R."""
    rows, cols = np.mgrid[0:height, 0:width]
    r = 10 * rows + cols + offset
    return np.stack([r, r + 100, 255 - r], axis=-1).astype(np.uint8)


def image(width=8, height=6, offset=0):
    return Image.fromarray(grid(width, height, offset))


def pixels(img):
    return np.asarray(img)


# Resize, CenterCrop, CornerCrop

def test_resize_shorter_side_landscape_and_portrait():
    # (width, height): short 6 -> 3, long int(3 * 8 / 6) = 4
    assert Resize(3)(image(8, 6)).size == (4, 3)
    assert Resize(3)(image(6, 8)).size == (3, 4)
    # int(4 * 10 / 7) = int(5.71) = 5: truncation, not rounding
    assert Resize(4)(image(10, 7)).size == (5, 4)
    assert Resize(4)(image(7, 10)).size == (4, 5)


def test_resize_to_height_width_pair():
    assert Resize((2, 5))(image(8, 6)).size == (5, 2)


def test_resize_to_same_size_is_a_no_op():
    img = image(8, 6)
    assert Resize(6)(img) is img


def test_center_crop_offset():
    src = grid(8, 6)
    # size 4: top round((6 - 4) / 2) = 1, left round((8 - 4) / 2) = 2
    assert np.array_equal(pixels(CenterCrop(4)(image(8, 6))), src[1:5, 2:6])
    # size 3: top round(1.5) = 2, left round(2.5) = 2 (Python's round, as torchvision)
    assert np.array_equal(pixels(CenterCrop(3)(image(8, 6))), src[2:5, 2:5])
    # (h, w) = (2, 5): top 2, left round(1.5) = 2
    assert np.array_equal(pixels(CenterCrop((2, 5))(image(8, 6))), src[2:4, 2:7])


def test_center_crop_larger_than_image_pads_like_torchvision():
    # (h, w) = (6, 11) on an 8 x 6 image: torchvision pads 1 column left and 2 right with black
    out = pixels(CenterCrop((6, 11))(image(8, 6)))
    assert out.shape == (6, 11, 3)
    assert np.array_equal(out[:, 1:9], grid(8, 6))
    assert not out[:, [0, 9, 10]].any()


@pytest.mark.parametrize('position, top, left', [('c', 1, 2), ('tl', 0, 0), ('tr', 0, 4),
                                                 ('bl', 2, 0), ('br', 2, 4)])
def test_corner_crop_positions(position, top, left):
    out = pixels(CornerCrop(4, position)(image(8, 6)))
    assert np.array_equal(out, grid(8, 6)[top:top + 4, left:left + 4])


def test_corner_crop_random_position_is_fixed_per_clip():
    random.seed(0)
    t = CornerCrop(4)
    seen = set()
    for _ in range(50):
        t.randomize_parameters()
        first = pixels(t(image(8, 6)))
        assert np.array_equal(pixels(t(image(8, 6))), first)
        seen.add(t.crop_position)
    assert seen == {'c', 'tl', 'tr', 'bl', 'br'}


def test_corner_crop_rejects_unknown_position():
    with pytest.raises(ValueError, match='xx'):
        CornerCrop(4, 'xx')


# MultiScaleCornerCrop

def test_multiscale_corner_crop_fixed_scale_and_position():
    # shorter side 6 * 0.5 = 3: the 3 x 3 top-left square, resized to 4 x 4
    t = MultiScaleCornerCrop(4, [0.5], crop_positions=['tl'])
    expected = image(8, 6).crop((0, 0, 3, 3)).resize((4, 4), Image.Resampling.BILINEAR)
    assert np.array_equal(pixels(t(image(8, 6))), pixels(expected))


def test_multiscale_corner_crop_same_crop_for_every_frame_of_a_clip():
    random.seed(1)
    t = MultiScaleCornerCrop(4, [1.0, 0.5])
    draws = set()
    for _ in range(100):
        t.randomize_parameters()
        size = int(6 * t.scale)
        top, left = st.corner_offsets(8, 6, size, t.crop_position)
        for offset in (0, 30, 60):  # three different frames of one clip
            frame = image(8, 6, offset)
            expected = frame.crop((left, top, left + size, top + size)).resize(
                (4, 4), Image.Resampling.BILINEAR)
            out = t(frame)
            assert out.size == (4, 4)
            assert np.array_equal(pixels(out), pixels(expected))
        draws.add((t.scale, t.crop_position))
    assert len(draws) == 10  # 2 scales x 5 positions


# RandomResizedCrop

def test_random_resized_crop_box_inside_image_with_scale_and_ratio_in_bounds():
    random.seed(2)
    width, height = 400, 300
    scale, ratio = (0.25, 1.0), (0.75, 4 / 3)
    for _ in range(500):
        top, left, h, w = st.random_resized_crop_box(width, height, scale, ratio)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        # rounding w and h to integers moves area and ratio by well under 2 % at this size
        assert scale[0] * 0.98 <= w * h / (width * height) <= scale[1]
        assert ratio[0] * 0.98 <= w / h <= ratio[1] * 1.02


def test_random_resized_crop_whole_square_image():
    # scale (1, 1), ratio (1, 1) on 6 x 6: w = h = 6 fits at once, randint(0, 0) twice -> the
    # whole image
    assert st.random_resized_crop_box(6, 6, (1.0, 1.0), (1.0, 1.0)) == (0, 0, 6, 6)


def test_random_resized_crop_fallback_is_central_crop():
    # 8 x 6, scale (1, 1), ratio (1, 1): every try gives w = h = round(sqrt(48)) = 7 > 6, so the
    # fallback: in_ratio 8 / 6 > 1 -> h = 6, w = round(6 * 1) = 6, top 0, left (8 - 6) // 2 = 1
    assert st.random_resized_crop_box(8, 6, (1.0, 1.0), (1.0, 1.0)) == (0, 1, 6, 6)
    # portrait 100 x 400 with ratio (1, 1) and scale >= 0.9: in_ratio 0.25 < 1 -> w = 100,
    # h = 100, top 150
    assert st.random_resized_crop_box(100, 400, (0.9, 1.0), (1.0, 1.0)) == (150, 0, 100, 100)


def test_random_resized_crop_same_box_for_a_clip_new_box_after_randomize():
    random.seed(3)
    t = RandomResizedCrop(4, scale=(0.1, 0.6))
    boxes = set()
    for _ in range(20):
        t.randomize_parameters()
        assert t.box is None  # drawn at the next frame, from its size
        first = t(image(8, 6))
        box = t.box
        top, left, h, w = box
        frame = image(8, 6, offset=50)
        expected = frame.crop((left, top, left + w, top + h)).resize((4, 4),
                                                                     Image.Resampling.BILINEAR)
        assert np.array_equal(pixels(t(frame)), pixels(expected))
        assert t.box == box
        assert first.size == (4, 4)
        boxes.add(box)
    assert len(boxes) > 5


def test_random_resized_crop_get_box_draws_once_from_the_size_it_is_given():
    """The fast path draws the box from a JPEG header: the same draw as the first frame's."""
    t = RandomResizedCrop(4, scale=(0.1, 0.6))
    random.seed(5)
    expected = st.random_resized_crop_box(80, 60, (0.1, 0.6), (3 / 4, 4 / 3))
    random.seed(5)
    assert t.get_box(80, 60) == expected
    state = random.getstate()
    assert t.get_box(8, 6) == expected and random.getstate() == state  # no new draw
    top, left, h, w = expected
    frame = image(80, 60)
    crop = frame.crop((left, top, left + w, top + h)).resize((4, 4), Image.Resampling.BILINEAR)
    assert np.array_equal(pixels(t(frame)), pixels(crop))


def test_random_resized_crop_height_width_size():
    assert RandomResizedCrop((3, 5))(image(8, 6)).size == (5, 3)


# RandomHorizontalFlip

def test_flip_always_and_never():
    src = grid(8, 6)
    for seed in range(20):
        random.seed(seed)
        always, never = RandomHorizontalFlip(p=1.0), RandomHorizontalFlip(p=0.0)
        always.randomize_parameters()
        never.randomize_parameters()
        assert np.array_equal(pixels(always(image())), src[:, ::-1])
        assert np.array_equal(pixels(never(image())), src)


def test_flip_decision_drawn_once_per_clip():
    # seed 0 draws random() = 0.844 (no flip), seed 1 draws 0.134 (flip)
    for seed, flipped in ((0, False), (1, True)):
        assert (random.Random(seed).random() < 0.5) == flipped
        t = RandomHorizontalFlip()
        random.seed(seed)
        t.randomize_parameters()
        for offset in (0, 40):
            src = grid(8, 6, offset)
            expected = src[:, ::-1] if flipped else src
            assert np.array_equal(pixels(t(image(8, 6, offset))), expected)


# ColorJitter

def test_color_jitter_zero_is_identity():
    t = ColorJitter()
    assert t.adjustments == []
    assert np.array_equal(pixels(t(image())), grid())


def test_color_jitter_brightness_same_factor_for_a_clip():
    random.seed(4)
    t = ColorJitter(brightness=0.5)
    factors = set()
    for _ in range(5):
        t.randomize_parameters()
        [(adjust, factor)] = t.adjustments
        assert 0.5 <= factor <= 1.5 and factor != 1.0
        for offset in (0, 40):
            frame = image(8, 6, offset)
            out = pixels(t(frame))
            assert np.array_equal(out, pixels(ImageEnhance.Brightness(frame).enhance(factor)))
            assert not np.array_equal(out, pixels(frame))
        factors.add(factor)
    assert len(factors) == 5


def test_color_jitter_ranges_and_random_order():
    random.seed(5)
    t = ColorJitter(brightness=0.4, contrast=1.5, saturation=0.4, hue=0.1)
    assert t.contrast == (0.0, 2.5)  # 1 - 1.5 clipped at 0
    assert t.hue == (-0.1, 0.1)
    orders = set()
    for _ in range(50):
        t.randomize_parameters()
        factors = {adjust.__name__: factor for adjust, factor in t.adjustments}
        assert 0.6 <= factors['adjust_brightness'] <= 1.4
        assert 0.0 <= factors['adjust_contrast'] <= 2.5
        assert -0.1 <= factors['adjust_hue'] <= 0.1
        orders.add(tuple(adjust.__name__ for adjust, _ in t.adjustments))
    assert len(orders) > 5


def test_color_jitter_rejects_bad_values():
    with pytest.raises(ValueError, match='brightness'):
        ColorJitter(brightness=-0.1)
    with pytest.raises(ValueError, match='hue'):
        ColorJitter(hue=0.6)


def test_adjust_hue_rotates_hue():
    red = Image.new('RGB', (2, 2), (255, 0, 0))
    # hue 0 + int(255 / 3) = 85 of 255: a third of the circle, pure green
    assert pixels(st.adjust_hue(red, 1 / 3))[0, 0].tolist() == [0, 255, 0]
    # -85 wraps to 171: just past blue
    r, g, b = pixels(st.adjust_hue(red, -1 / 3))[0, 0].tolist()
    assert (g, b) == (0, 255) and r < 10
    gray = Image.new('L', (2, 2), 7)
    assert st.adjust_hue(gray, 0.3) is gray


# ToTensor, ScaleValue, Normalize, PickFirstChannels

def test_to_tensor_shape_dtype_range():
    out = ToTensor()(image(8, 6))
    assert out.shape == (3, 6, 8) and out.dtype == np.float32 and out.flags['C_CONTIGUOUS']
    assert np.array_equal(out, grid(8, 6).transpose(2, 0, 1).astype(np.float32) / 255)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert ToArray is ToTensor


def test_to_tensor_gray_image_has_one_channel():
    out = ToArray()(Image.new('L', (4, 3), 51))
    assert out.shape == (1, 3, 4)
    assert np.allclose(out, 0.2)


def test_scale_value_does_not_modify_input():
    arr = np.full((3, 2, 2), 0.5, dtype=np.float32)
    out = ScaleValue(255)(arr)
    assert np.allclose(out, 127.5) and out.dtype == np.float32
    assert np.allclose(arr, 0.5)


def test_normalize_per_channel():
    arr = np.stack([np.full((2, 2), v, dtype=np.float32) for v in (1.0, 2.0, 3.0)])
    out = Normalize([1.0, 1.0, 0.0], [1.0, 0.5, 2.0])(arr)
    assert out.dtype == np.float32
    assert np.allclose(out[:, 0, 0], [0.0, 2.0, 1.5])  # (1-1)/1, (2-1)/0.5, (3-0)/2
    assert np.allclose(arr[:, 0, 0], [1.0, 2.0, 3.0])  # input untouched


def test_pick_first_channels():
    arr = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)
    out = PickFirstChannels(2)(arr)
    assert out.shape == (2, 2, 2)
    assert np.array_equal(out, arr[:2])


# Compose

def test_compose_applies_in_order():
    # to [0, 1] -> x 2 -> (x - 1) / 2: the top-left red value 0 gives (0 * 2 - 1) / 2 = -0.5
    out = Compose([CornerCrop(2, 'tl'), ToTensor(), ScaleValue(2),
                   Normalize([1, 1, 1], [2, 2, 2])])(image())
    assert out.shape == (3, 2, 2)
    assert np.allclose(out, (grid()[:2, :2].transpose(2, 0, 1) / 255 * 2 - 1) / 2)
    # normalizing before scaling gives different values: the order is respected
    swapped = Compose([CornerCrop(2, 'tl'), ToTensor(), Normalize([1, 1, 1], [2, 2, 2]),
                       ScaleValue(2)])(image())
    assert np.allclose(swapped, (grid()[:2, :2].transpose(2, 0, 1) / 255 - 1) / 2 * 2)


def test_compose_randomize_parameters_reaches_every_transform():
    first, second = RandomHorizontalFlip(), RandomHorizontalFlip()
    t = Compose([first, ToTensor(), second])
    random.seed(6)
    t.randomize_parameters()
    rng = random.Random(6)
    assert (first.random_p, second.random_p) == (rng.random(), rng.random())


# mean and std

def test_get_mean_std_values():
    assert get_mean_std(1, 'kinetics') == ([0.4345, 0.4051, 0.3775], [0.2768, 0.2713, 0.2737])
    assert get_mean_std(1, 'activitynet') == ([0.4477, 0.4209, 0.3906], [0.2767, 0.2695, 0.2714])
    assert get_mean_std(255, '0.5') == ([127.5] * 3, [127.5] * 3)
    mean, std = get_mean_std(255, 'kinetics')
    assert all(math.isclose(m, k * 255) for m, k in zip(mean, st.KINETICS_MEAN))
    assert all(math.isclose(s, k * 255) for s, k in zip(std, st.KINETICS_STD))


def test_get_mean_std_rejects_unknown_dataset():
    with pytest.raises(ValueError, match='imagenet'):
        get_mean_std(1, 'imagenet')


def test_scale_is_the_references_name_for_resize():
    assert st.Scale is st.Resize
