"""Tests of N4 bias correction, intensity normalisation and lesion crops."""
import numpy as np
import pytest
import SimpleITK as sitk

from helpers import disc_phantom
from stbsm_mm.preprocessing import (correct_bias_field, crop_lesion,
                                    foreground_mask, normalize_intensity)

FAST_N4 = dict(iterations=(10, 10))


def coefficient_of_variation(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


@pytest.fixture
def biased_disc():
    """A uniform disc times a bias that doubles from left to right.

    Returns the biased image (non-square pixels, shifted origin) and the
    disc's boolean mask.
    """
    size = 96
    disc = disc_phantom(size, size, value=100.0)
    bias = 1.0 + np.arange(size) / (size - 1)
    image = sitk.GetImageFromArray((disc * bias[np.newaxis, :]).astype(
        np.float32))
    image.SetSpacing((0.7, 1.1))
    image.SetOrigin((5.0, -3.0))
    return image, disc > 0


# N4 bias correction.


@pytest.mark.parametrize('shrink_factor', [1, 4])
def test_n4_removes_ramp_bias(biased_disc, shrink_factor):
    image, disc = biased_disc
    before = coefficient_of_variation(sitk.GetArrayFromImage(image)[disc])

    corrected, _ = correct_bias_field(image, shrink_factor=shrink_factor,
                                      **FAST_N4)

    after = coefficient_of_variation(
        sitk.GetArrayFromImage(corrected)[disc])
    assert before > 0.1
    assert after < before / 4


def test_n4_keeps_geometry(biased_disc):
    image, _ = biased_disc

    corrected, mask = correct_bias_field(image, shrink_factor=4, **FAST_N4)

    for output in (corrected, mask):
        assert output.GetSize() == image.GetSize()
        assert output.GetSpacing() == pytest.approx(image.GetSpacing())
        assert output.GetOrigin() == pytest.approx(image.GetOrigin())
    assert corrected.GetPixelID() == sitk.sitkFloat32


def test_n4_default_mask_is_disc(biased_disc):
    image, disc = biased_disc

    _, mask = correct_bias_field(image, **FAST_N4)

    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask) > 0, disc)


@pytest.mark.parametrize('shrink_factor', [0, -2])
def test_n4_invalid_shrink_factor(biased_disc, shrink_factor):
    image, _ = biased_disc

    with pytest.raises(ValueError, match=f'shrink_factor={shrink_factor}'):
        correct_bias_field(image, shrink_factor=shrink_factor, **FAST_N4)


def test_n4_rejects_volume():
    volume = sitk.Image([8, 8, 3], sitk.sitkFloat32)

    with pytest.raises(ValueError, match='2-D slice'):
        correct_bias_field(volume, **FAST_N4)


def test_foreground_mask_flat_image():
    flat = sitk.Image([16, 12], sitk.sitkFloat32) + 50.0

    mask = sitk.GetArrayFromImage(foreground_mask(flat))

    assert mask.shape == (12, 16)
    assert (mask == 1).all()


# Intensity normalisation.


def ramp_image(low: float = 0.0, high: float = 1000.0) -> sitk.Image:
    values = np.linspace(low, high, 100 * 100, dtype=np.float32)
    image = sitk.GetImageFromArray(values.reshape(100, 100))
    image.SetSpacing((0.4, 0.9))
    return image


def test_normalize_uint8_keeps_geometry():
    image = ramp_image()

    output = normalize_intensity(image)

    assert output.GetPixelID() == sitk.sitkUInt8
    assert output.GetSize() == image.GetSize()
    assert output.GetSpacing() == pytest.approx(image.GetSpacing())


def test_normalize_percentile_window():
    image = ramp_image(0.0, 1000.0)

    output = sitk.GetArrayFromImage(
        normalize_intensity(image, low_percentile=10, high_percentile=90))

    values = sitk.GetArrayFromImage(image)
    # The window is 100..900: below maps to 0, above to 255, the middle to
    # the middle grey.
    assert (output[values <= 99.0] == 0).all()
    assert (output[values >= 901.0] == 255).all()
    middle = np.abs(values - 500.0) < 1.0
    assert np.abs(output[middle].astype(int) - 128).max() <= 1


def test_normalize_percentile_from_mask():
    array = np.zeros((20, 20), np.float32)
    array[5:15, 5:15] = np.linspace(200, 400, 100).reshape(10, 10)
    image = sitk.GetImageFromArray(array)
    mask = sitk.GetImageFromArray((array > 0).astype(np.uint8))

    output = sitk.GetArrayFromImage(
        normalize_intensity(image, mask, low_percentile=0,
                            high_percentile=100))

    # The window comes from the masked square only: 200..400.
    assert output[5, 5] == 0
    assert output[14, 14] == 255
    assert output[0, 0] == 0


def test_normalize_zscore():
    rng = np.random.default_rng(0)
    values = rng.normal(500.0, 50.0, (64, 64)).astype(np.float32)
    mean, std = float(values.mean()), float(values.std())
    values[0, 0], values[0, 1], values[0, 2] = mean, mean - 4 * std, \
        mean + 4 * std

    output = sitk.GetArrayFromImage(
        normalize_intensity(sitk.GetImageFromArray(values),
                            method='zscore'))

    # mean - 3 SD .. mean + 3 SD maps to 0..255, so the mean is mid-grey.
    assert abs(int(output[0, 0]) - 128) <= 1
    assert output[0, 1] == 0
    assert output[0, 2] == 255
    one_sd = np.abs(values - (mean + std)) < 0.05 * std
    expected = 255 * 4 / 6
    assert np.abs(output[one_sd].astype(float) - expected).max() <= 4


def test_normalize_flat_image():
    flat = sitk.Image([16, 16], sitk.sitkFloat32) + 42.0

    for method in ('percentile', 'zscore'):
        output = sitk.GetArrayFromImage(normalize_intensity(flat,
                                                            method=method))
        assert output.dtype == np.uint8
        assert len(np.unique(output)) == 1


@pytest.mark.parametrize('kwargs, name', [
    (dict(method='minmax'), 'method'),
    (dict(low_percentile=60, high_percentile=40), 'low_percentile'),
    (dict(low_percentile=-1), 'low_percentile'),
    (dict(high_percentile=101), 'high_percentile'),
])
def test_normalize_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        normalize_intensity(ramp_image(), **kwargs)


# Lesion crops.


def numbered_image(spacing, origin=(12.0, -7.0)) -> sitk.Image:
    array = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def test_crop_square_spacing_copies_pixels():
    image = numbered_image((0.8, 0.8))
    box = (7, 11, 27, 23)

    crop = crop_lesion(image, box)

    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(crop),
        sitk.GetArrayFromImage(image)[11:23, 7:27])
    assert crop.GetSpacing() == pytest.approx((0.8, 0.8))


def test_crop_square_spacing_origin():
    image = numbered_image((0.8, 0.8))

    crop = crop_lesion(image, (7, 11, 27, 23))

    expected = image.TransformIndexToPhysicalPoint((7, 11))
    assert crop.GetOrigin() == pytest.approx(expected)


@pytest.mark.parametrize('spacing, size', [
    ((0.5, 1.0), (20, 24)),
    ((1.0, 0.4), (50, 12)),
])
def test_crop_non_square_spacing(spacing, size):
    image = numbered_image(spacing)
    box = (7, 11, 27, 23)  # 20 x 12 pixels

    crop = crop_lesion(image, box)

    finer = min(spacing)
    assert crop.GetSpacing() == pytest.approx((finer, finer))
    assert crop.GetSize() == size
    # The crop covers the same physical extent as the box.
    width_mm = (box[2] - box[0]) * spacing[0]
    height_mm = (box[3] - box[1]) * spacing[1]
    assert crop.GetSize()[0] * finer == pytest.approx(width_mm)
    assert crop.GetSize()[1] * finer == pytest.approx(height_mm)


@pytest.mark.parametrize('spacing', [(0.5, 1.0), (1.0, 0.4)])
def test_crop_non_square_corner(spacing):
    image = numbered_image(spacing)
    box = (7, 11, 27, 23)

    crop = crop_lesion(image, box)

    # The outer corner of the first pixel lies half a pixel before its
    # centre. It must be the same point in the source box and in the crop.
    source_corner = np.array(image.TransformContinuousIndexToPhysicalPoint(
        (box[0] - 0.5, box[1] - 0.5)))
    crop_corner = np.array(crop.TransformContinuousIndexToPhysicalPoint(
        (-0.5, -0.5)))
    np.testing.assert_allclose(crop_corner, source_corner, atol=1e-6)


def test_crop_non_square_no_black_border():
    image = sitk.GetImageFromArray(np.full((40, 50), 90, np.uint8))
    image.SetSpacing((0.5, 1.0))

    crop = crop_lesion(image, (0, 0, 50, 40))

    array = sitk.GetArrayFromImage(crop)
    assert crop.GetPixelID() == sitk.sitkUInt8
    assert (array == 90).all()


def test_crop_keep_pixel_spacing():
    image = numbered_image((0.5, 1.0))
    box = (7, 11, 27, 23)

    crop = crop_lesion(image, box, square_pixels=False)

    assert crop.GetSpacing() == pytest.approx((0.5, 1.0))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(crop),
        sitk.GetArrayFromImage(image)[11:23, 7:27])


@pytest.mark.parametrize('box', [(5, 5, 5, 10), (10, 5, 5, 10),
                                 (-1, 0, 10, 10), (0, 0, 51, 10),
                                 (0, 0, 10, 41)])
def test_crop_invalid_box(box):
    with pytest.raises(ValueError, match='box='):
        crop_lesion(numbered_image((1.0, 1.0)), box)
