"""Joint transforms: nearest-neighbour masks, ignore-index padding, tensor types."""
import itertools
import random

import numpy as np
import pytest
import torch
from PIL import Image

from utils import ext_transforms as et


def _pair(w=20, h=10):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))
    mask = Image.fromarray((np.arange(w * h).reshape(h, w) % 3).astype(np.uint8))
    return img, mask


def test_random_crop_pads_mask_with_ignore_index_and_only_what_is_missing():
    img, mask = _pair(20, 10)
    random.seed(0)
    out_img, out_mask = et.ExtRandomCrop((16, 24), pad_if_needed=True)(img, mask)
    m = np.asarray(out_mask)
    assert out_img.size == (24, 16) and m.shape == (16, 24)
    assert (m == 255).sum() == 16 * 24 - 10 * 20  # exactly the padding is void
    assert set(np.unique(m)) == {0, 1, 2, 255}


def test_scale_uses_nearest_for_masks():
    img, mask = _pair()
    _, scaled = et.ExtScale(1.7)(img, mask)
    assert set(np.unique(np.asarray(scaled))) <= {0, 1, 2}
    _, scaled = et.ExtRandomScale((0.5, 2.0))(img, mask)
    assert set(np.unique(np.asarray(scaled))) <= {0, 1, 2}


def test_to_tensor_and_normalize():
    img, mask = _pair()
    t, m = et.ExtCompose([et.ExtToTensor(), et.ExtNormalize((0.5,) * 3, (0.5,) * 3)])(img, mask)
    assert t.dtype == torch.float32 and t.shape == (3, 10, 20) and -1.0 <= t.min() and t.max() <= 1.0
    assert m.dtype == torch.int64 and m.shape == (10, 20)
    expected = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255 * 2 - 1
    assert torch.allclose(t, expected, atol=1e-6)


def test_flips_rotation_pad_and_center_crop_keep_pairs_aligned():
    img, mask = _pair(20, 10)
    i2, m2 = et.ExtRandomHorizontalFlip(p=1.0)(img, mask)
    assert np.array_equal(np.asarray(m2), np.asarray(mask)[:, ::-1])
    i3, m3 = et.ExtRandomVerticalFlip(p=1.0)(img, mask)
    assert np.array_equal(np.asarray(m3), np.asarray(mask)[::-1])
    _, m4 = et.ExtPad(32)(img, mask)
    assert m4.size == (32, 32) and np.asarray(m4)[20:, :].min() == 255
    i5, m5 = et.ExtCenterCrop(8)(img, mask)
    assert i5.size == m5.size == (8, 8)
    _, m6 = et.ExtRandomRotation(30)(img, mask)
    assert set(np.unique(np.asarray(m6))) <= {0, 1, 2, 255}
    i7, m7 = et.ExtResize((6, 9))(img, mask)
    assert i7.size == m7.size == (9, 6) and set(np.unique(np.asarray(m7))) <= {0, 1, 2}


def test_center_crop_pads_a_smaller_mask_with_ignore_index_aligned_with_the_image():
    img, mask = _pair(20, 10)
    out_img, out_mask = et.ExtCenterCrop((14, 24))(img, mask)  # 4 rows and 4 columns more than the pair
    i, m = np.asarray(out_img), np.asarray(out_mask)
    assert i.shape[:2] == m.shape == (14, 24)
    inside = (slice(2, 12), slice(2, 22))
    assert np.array_equal(m[inside], np.asarray(mask)) and np.array_equal(i[inside], np.asarray(img))
    padded = np.ones_like(m, dtype=bool)
    padded[inside] = False
    assert (m[padded] == 255).all() and (i[padded] == 0).all()


def test_to_tensor_honours_target_type():
    img, mask = _pair()
    assert et.ExtToTensor()(img, mask)[1].dtype == torch.int64  # what cross-entropy takes
    m = et.ExtToTensor(target_type="uint8")(img, mask)[1]
    assert m.dtype == torch.uint8 and torch.equal(m.long(), et.ExtToTensor()(img, mask)[1])
    with pytest.raises(ValueError, match="integer type"):
        et.ExtToTensor(target_type="float32")


def _every_transform():
    """Each joint transform the folder dataset and the training recipes use, with random draws."""
    return et.ExtCompose([
        et.ExtRandomScale((0.5, 2.0)), et.ExtRandomCrop((24, 28), padding=1, pad_if_needed=True),
        et.ExtRandomHorizontalFlip(), et.ExtRandomVerticalFlip(), et.ExtRandomRotation(20, resample=True),
        et.ExtPad(16), et.ExtResize(21), et.ExtCenterCrop((18, 30)), et.ExtScale(0.8), et.ExtToTensor()])


@pytest.mark.parametrize("seed", range(4))
def test_band_arrays_go_exactly_the_way_of_rgb_images(seed):
    """A 3-band uint8 array through every transform gives bit for bit what its RGB image gives."""
    img, mask = _pair(37, 23)
    pipeline = _every_transform()
    random.seed(seed)
    expected_img, expected_mask = pipeline(img, mask)
    random.seed(seed)
    got_img, got_mask = pipeline(np.asarray(img).transpose(2, 0, 1).copy(), mask)
    assert torch.equal(got_img, expected_img) and torch.equal(got_mask, expected_mask)


def test_float_bands_of_any_count_keep_their_values_and_the_mask_aligned():
    bands = np.random.default_rng(1).uniform(0, 20000, (5, 10, 20)).astype(np.float32)
    mask = Image.fromarray((np.arange(200).reshape(10, 20) % 3).astype(np.uint8))
    out, out_mask = et.ExtCompose([et.ExtRandomHorizontalFlip(p=1.0), et.ExtRandomCrop((16, 24), pad_if_needed=True),
                                   et.ExtToTensor(normalize=False)])(bands, mask)
    assert out.shape == (5, 16, 24) and out_mask.shape == (16, 24)
    inside = out_mask != 255
    kept = out[:, inside].sort().values
    assert inside.sum() == 200 and torch.equal(kept, torch.from_numpy(bands).flatten(1).sort().values)
    scaled, _ = et.ExtScale(2.0)(bands, mask)
    assert scaled.shape == (5, 20, 40) and scaled.dtype == np.float32 and scaled.max() > 255


def _images(seed: int):
    """An RGB photo, a palette mask, a grey image, a 32-bit integer and a 32-bit float band of odd sizes."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 255, (37, 50, 3), dtype=np.uint8))
    mask = Image.fromarray(rng.integers(0, 21, (37, 50), dtype=np.uint8)).convert("P")
    mask.putpalette(list(range(256)) * 3)
    grey = Image.fromarray(rng.integers(0, 255, (37, 50), dtype=np.uint8))
    band = Image.fromarray(rng.normal(size=(37, 50)).astype(np.float32), "F")
    return rgb, mask, grey, grey.convert("I"), band


def _same(ours: Image.Image, theirs: Image.Image) -> None:
    assert (ours.mode, ours.size) == (theirs.mode, theirs.size)
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    assert ours.getpalette() == theirs.getpalette()


@pytest.mark.parametrize("seed", [0, 1])
def test_the_pillow_operations_equal_torchvision_s_for_pil_images(seed):
    """The transforms call Pillow as torchvision's functional API does for PIL images: same pixels, mode and
    palette, for every mode a transform meets (RGB, palette masks, grey, float bands)."""
    tf = pytest.importorskip("torchvision.transforms.functional")
    for img in _images(seed):
        for fill in (0, 255):
            for padding in (3, [0, 0, 5, 2], [1, 4, 2, 0]):
                _same(et._pil_pad(img, padding, fill), tf.pad(img, padding, fill=fill))
        for size in ((20, 30), (21, 50), (37, 11)):
            _same(et._pil_center_crop(img, size), tf.center_crop(img, list(size)))
        for size in ([24], [40], [30, 45], [37, 50]):
            for resample, mode in ((Image.NEAREST, tf.InterpolationMode.NEAREST),
                                   (Image.BILINEAR, tf.InterpolationMode.BILINEAR)):
                _same(et._pil_resize(img, size, resample), tf.resize(img, size, mode, antialias=True))
        _same(et.ExtRandomHorizontalFlip.flip(img), tf.hflip(img))
        _same(et.ExtRandomVerticalFlip.flip(img), tf.vflip(img))
        for (resample, mode), expand, center, fill in itertools.product(
                ((Image.NEAREST, tf.InterpolationMode.NEAREST), (Image.BILINEAR, tf.InterpolationMode.BILINEAR)),
                (False, True), (None, (5, 9)), (0, 255)):
            _same(et._pil_rotate(img, 17.5, resample, expand, center, fill),
                  tf.rotate(img, 17.5, mode, expand, center, fill=fill))


def test_flips_also_take_tensors():
    tensor = torch.arange(6.0).view(1, 2, 3)
    assert torch.equal(et.ExtRandomHorizontalFlip.flip(tensor), tensor.flip(-1))
    assert torch.equal(et.ExtRandomVerticalFlip.flip(tensor), tensor.flip(-2))
