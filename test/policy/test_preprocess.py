"""Tests for pi0_ros.model.preprocess (resize_with_pad, images_to_model)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pi0_ros.model.preprocess import CAMERA_SLOTS, images_to_model, resize_with_pad, resized_shape


def _solid(h, w, rgb=(10, 200, 30)):
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[...] = rgb
    return img


def test_no_resize_letterbox_hand_computed():
    # 2x4 into 4x4: ratio = max(4/4, 2/4) = 1 -> content stays 2x4, one black row above and below.
    img = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3) + 1
    out = resize_with_pad(img, 4, 4)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1:3], img)
    assert not out[0].any() and not out[3].any()


def test_odd_padding_goes_bottom_and_right():
    tall = _solid(4, 3)
    out = resize_with_pad(tall, 4, 4)  # one column of padding -> on the right
    np.testing.assert_array_equal(out[:, :3], tall)
    assert not out[:, 3].any()
    wide = _solid(3, 4)
    out = resize_with_pad(wide, 4, 4)  # one row of padding -> at the bottom
    np.testing.assert_array_equal(out[:3], wide)
    assert not out[3].any()


def test_downscale_640x480_hand_computed():
    # 480x640 -> ratio 640/224; content 168x224 centred: 28 black rows on top and bottom.
    img = _solid(480, 640, (255, 128, 0))
    out = resize_with_pad(img)
    assert resized_shape(480, 640, 224, 224) == (168, 224)
    assert out.shape == (224, 224, 3)
    assert not out[:28].any() and not out[196:].any()
    np.testing.assert_array_equal(out[28:196], np.broadcast_to(np.uint8([255, 128, 0]), (168, 224, 3)))


def test_tall_odd_size_and_upscale():
    img = _solid(101, 37)  # odd sizes, portrait, needs upscaling: 224 x int(37*224/101)=82
    out = resize_with_pad(img)
    assert resized_shape(101, 37, 224, 224) == (224, 82)
    left = (224 - 82) // 2
    assert not out[:, :left].any() and not out[:, left + 82 :].any()
    assert (out[:, left : left + 82] == np.uint8([10, 200, 30])).all()


def test_extreme_aspect_keeps_at_least_one_row():
    out = resize_with_pad(_solid(1, 1000))
    assert out.shape == (224, 224, 3)
    assert out.any(axis=(1, 2)).sum() == 1  # a single non-black row


def test_close_to_openpi_antialiased_bilinear():
    # openpi resizes with an antialiased bilinear filter; INTER_AREA should agree on smooth content
    # and exactly on the padding placement.
    yy, xx = np.mgrid[0:480, 0:640]
    img = np.stack([xx * 255 // 639, yy * 255 // 479, (xx + yy) * 255 // 1118], -1).astype(np.uint8)
    ours = resize_with_pad(img)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    ref = F.interpolate(t, size=(168, 224), mode="bilinear", align_corners=False, antialias=True)
    ref = ref.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    diff = np.abs(ours[28:196].astype(int) - ref.astype(int))
    assert diff.max() <= 3, diff.max()
    assert not ours[:28].any() and not ours[196:].any()


def test_out_buffer_is_filled_in_place():
    buf = np.full((224, 224, 3), 77, dtype=np.uint8)
    res = resize_with_pad(_solid(480, 640), out=buf)
    assert res is buf
    assert not buf[:28].any()  # stale content cleared


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((10, 10), np.uint8), "grayscale"),
        (np.zeros((10, 10, 1), np.uint8), "grayscale"),
        (np.zeros((10, 10, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
    ],
)
def test_bad_images_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        resize_with_pad(bad)


def test_images_to_model_range_order_and_mask():
    red = _solid(224, 224, (255, 0, 0))
    pixels, mask = images_to_model({"base_0_rgb": red, "right_wrist_0_rgb": _solid(480, 640, (0, 0, 255))})
    assert pixels.shape == (3, 3, 224, 224) and pixels.dtype == torch.float32
    assert mask.tolist() == [True, False, True]
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    # RGB order, CHW layout, exact end points 0 -> -1 and 255 -> 1.
    assert (pixels[0, 0] == 1.0).all() and (pixels[0, 1] == -1.0).all() and (pixels[0, 2] == -1.0).all()
    # missing camera: black image (all -1)
    assert (pixels[1] == -1.0).all()
    # letterboxed camera: blue content, black bars
    assert (pixels[2, 2, 28:196] == 1.0).all() and (pixels[2, 2, :28] == -1.0).all()


def test_images_to_model_matches_reference_formula():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    pixels, _ = images_to_model({"base_0_rgb": img}, camera_slots=CAMERA_SLOTS[:1])
    ref = torch.from_numpy(img.astype(np.float32) / 255.0 * 2.0 - 1.0).permute(2, 0, 1)
    torch.testing.assert_close(pixels[0], ref, atol=1e-6, rtol=0)


def test_images_to_model_rejects_unknown_slot():
    with pytest.raises(ValueError, match="unknown camera slot"):
        images_to_model({"cam_high": _solid(224, 224)})


def test_non_contiguous_views_are_handled():
    # e.g. a BGR frame turned RGB by a channel-reversing view, or a cropped view
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    rgb_view = bgr[..., ::-1]
    np.testing.assert_array_equal(resize_with_pad(rgb_view), resize_with_pad(np.ascontiguousarray(rgb_view)))
    crop = bgr[:224, 100:324]
    pixels, mask = images_to_model({"base_0_rgb": crop})
    assert mask[0]
    ref = torch.from_numpy(crop.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    torch.testing.assert_close(pixels[0], ref, atol=1e-6, rtol=0)
