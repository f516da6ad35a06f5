"""Tests of messy pixel data: types, masks, slice counts, values, rasters."""
import inspect

import numpy as np
import PIL.Image
import pytest
import SimpleITK as sitk

from helpers import disc_phantom, textured_phantom, write_image
from stbsm_mm.io import DEFAULT_MAX_PIXELS, SliceReadError, read_slice
from stbsm_mm.preprocessing import (correct_bias_field, foreground_mask,
                                    normalize_intensity)

FAST_N4 = dict(iterations=(10, 10))


def pixels(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def biased_disc(size: int = 64) -> np.ndarray:
    """A whole-valued disc of 100..200 (bias ramp) on zero air, float32."""
    disc = disc_phantom(size, size, value=100.0)
    bias = 1.0 + np.arange(size) / (size - 1)
    return np.round(disc * bias[np.newaxis, :]).astype(np.float32)


def coefficient_of_variation(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


def save_png(path, array, mode=None):
    PIL.Image.fromarray(array, mode=mode).save(path)
    return path


# Integer pixel types and masks reaching N4.


@pytest.mark.parametrize('dtype', [np.int16, np.uint16, np.uint8])
def test_n4_integer_image_matches_float(dtype):
    array = biased_disc()
    reference, reference_mask = correct_bias_field(
        sitk.GetImageFromArray(array), **FAST_N4)

    corrected, mask = correct_bias_field(
        sitk.GetImageFromArray(array.astype(dtype)), **FAST_N4)

    assert corrected.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(pixels(corrected), pixels(reference),
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(pixels(mask), pixels(reference_mask))


def mask_variants(disc: np.ndarray) -> dict:
    """The same fit region as a bool array, 0/255 image and label map."""
    labels = disc.astype(np.uint8)
    labels[:, disc.shape[1] // 2:] *= 2
    return {
        'numpy_bool': disc,
        'numpy_uint8_255': disc.astype(np.uint8) * 255,
        'image_uint8_255': sitk.GetImageFromArray(disc.astype(np.uint8) * 255),
        'image_label_map': sitk.GetImageFromArray(labels),
        'image_float': sitk.GetImageFromArray(disc.astype(np.float32) * 0.5),
    }


@pytest.mark.parametrize('variant', [
    'numpy_bool', 'numpy_uint8_255', 'image_uint8_255', 'image_label_map',
    'image_float'
])
def test_n4_mask_types_match_binary(variant):
    array = biased_disc()
    disc = array > 0
    image = sitk.GetImageFromArray(array)
    binary = sitk.GetImageFromArray(disc.astype(np.uint8))
    reference, _ = correct_bias_field(image, binary, **FAST_N4)

    corrected, mask = correct_bias_field(image, mask_variants(disc)[variant],
                                         **FAST_N4)

    assert mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(pixels(mask), disc.astype(np.uint8))
    np.testing.assert_allclose(pixels(corrected), pixels(reference),
                               rtol=1e-5, atol=1e-3)


def test_n4_mask_gets_image_geometry():
    image = sitk.GetImageFromArray(biased_disc())
    image.SetSpacing((0.7, 1.1))
    image.SetOrigin((5.0, -3.0))

    _, mask = correct_bias_field(image, biased_disc() > 0, **FAST_N4)

    assert mask.GetSpacing() == pytest.approx((0.7, 1.1))
    assert mask.GetOrigin() == pytest.approx((5.0, -3.0))


def test_n4_mask_wrong_size():
    image = sitk.GetImageFromArray(biased_disc(64))

    with pytest.raises(ValueError, match=r'mask of size \(32, 64\)'):
        correct_bias_field(image, np.ones((64, 32), bool), **FAST_N4)


def test_n4_empty_mask():
    image = sitk.GetImageFromArray(biased_disc())

    with pytest.raises(ValueError, match='no non-zero pixel'):
        correct_bias_field(image, np.zeros((64, 64), np.uint8), **FAST_N4)


@pytest.mark.parametrize('dtype', [np.int16, np.uint16, np.uint8])
def test_read_integer_nifti_as_float(tmp_path, dtype):
    array = textured_phantom().round().clip(0, 250).astype(dtype)
    path = write_image(tmp_path / 'slice.nii.gz', array)

    image = read_slice(path)

    assert image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(pixels(image), array.astype(np.float32))


# One- and two-slice volumes.


@pytest.mark.parametrize('suffix', ['.nii.gz', '.mha'])
def test_one_slice_volume_reads_as_2d(tmp_path, suffix):
    array = textured_phantom()
    path = write_image(tmp_path / f'one{suffix}', array[np.newaxis],
                       spacing=(0.7, 0.4, 5.0))

    image = read_slice(path)

    assert image.GetDimension() == 2
    assert image.GetSpacing() == pytest.approx((0.7, 0.4))
    np.testing.assert_array_equal(pixels(image), array)


@pytest.mark.parametrize('suffix', ['.nii.gz', '.mha'])
def test_two_slice_volume_needs_index(tmp_path, suffix):
    volume = np.stack([textured_phantom(seed=1), textured_phantom(seed=2)])
    path = write_image(tmp_path / f'two{suffix}', volume)

    with pytest.raises(SliceReadError, match='contains 2 slices') as error:
        read_slice(path)
    assert str(path) in str(error.value)
    np.testing.assert_array_equal(pixels(read_slice(path, slice_index=1)),
                                  volume[1])


@pytest.mark.parametrize('slice_index', [2, -1])
def test_two_slice_volume_index_out_of_range(tmp_path, slice_index):
    volume = np.stack([textured_phantom(seed=1), textured_phantom(seed=2)])
    path = write_image(tmp_path / 'two.mha', volume)

    with pytest.raises(SliceReadError) as error:
        read_slice(path, slice_index=slice_index)
    message = str(error.value)
    assert str(path) in message
    assert f'slice_index={slice_index}' in message
    assert 'contains 2 slices' in message


def test_slice_index_not_integer(tmp_path):
    path = write_image(tmp_path / 'two.mha', np.zeros((2, 8, 8), np.uint8))

    with pytest.raises(SliceReadError, match=r"slice_index='1'"):
        read_slice(path, slice_index='1')


# Blank, negative and non-finite pixels.


@pytest.mark.parametrize('value', [0.0, 37.5])
def test_blank_slice_raises(tmp_path, value):
    path = write_image(tmp_path / 'blank.nii.gz',
                       np.full((16, 16), value, np.float32))

    with pytest.raises(SliceReadError, match='blank slice') as error:
        read_slice(path)
    assert str(path) in str(error.value)
    assert f'{value:g}' in str(error.value)


def test_blank_slice_of_volume_raises(tmp_path):
    volume = np.stack([textured_phantom(), np.zeros((64, 64), np.float32)])
    path = write_image(tmp_path / 'volume.nii.gz', volume)

    assert read_slice(path, slice_index=0).GetSize() == (64, 64)
    with pytest.raises(SliceReadError, match='blank slice'):
        read_slice(path, slice_index=1)


def test_read_negative_values(tmp_path):
    array = (textured_phantom() - 1000).round().astype(np.int16)
    path = write_image(tmp_path / 'signed.nii.gz', array)

    image = read_slice(path)

    np.testing.assert_array_equal(pixels(image), array.astype(np.float32))


def test_n4_negative_values_shifted():
    array = biased_disc()
    positive = sitk.GetImageFromArray(array)
    negative = sitk.GetImageFromArray(array - 1000.0)
    reference, reference_mask = correct_bias_field(positive, **FAST_N4)

    corrected, mask = correct_bias_field(negative, **FAST_N4)

    np.testing.assert_array_equal(pixels(mask), pixels(reference_mask))
    np.testing.assert_allclose(pixels(corrected) + 1000.0, pixels(reference),
                               atol=1e-2)


def test_n4_negative_values_remove_bias():
    array = biased_disc() - 1000.0
    disc = biased_disc() > 0
    before = coefficient_of_variation(array[disc] + 1000.0)

    corrected, _ = correct_bias_field(sitk.GetImageFromArray(array),
                                      **FAST_N4)

    after = coefficient_of_variation(pixels(corrected)[disc] + 1000.0)
    assert before > 0.1
    assert after < before / 4


@pytest.mark.parametrize('method', ['percentile', 'zscore'])
def test_normalize_negative_values(method):
    array = textured_phantom()
    positive = sitk.GetImageFromArray(array)
    negative = sitk.GetImageFromArray(array - 1000.0)
    mask = foreground_mask(positive)

    expected = pixels(normalize_intensity(positive, mask, method))
    output = pixels(normalize_intensity(negative, mask, method))

    np.testing.assert_array_equal(output, expected)
    assert output.max() == 255


def test_normalize_label_mask():
    array = textured_phantom()
    disc = array > 0
    labels = disc.astype(np.uint8) * 3
    image = sitk.GetImageFromArray(array)

    expected = pixels(normalize_intensity(image, disc.astype(np.uint8)))
    output = pixels(normalize_intensity(image, sitk.GetImageFromArray(labels)))

    np.testing.assert_array_equal(output, expected)


def test_normalize_rejects_nan():
    array = textured_phantom()
    array[3, 4] = np.nan

    with pytest.raises(ValueError, match='1 NaN or infinite'):
        normalize_intensity(sitk.GetImageFromArray(array))


@pytest.mark.parametrize('suffix', ['.nii.gz', '.nii', '.mha', '.nrrd'])
def test_nan_and_inf_pixels_raise(tmp_path, suffix):
    array = textured_phantom()
    array[0, :3] = np.nan
    array[5, 5:7] = np.inf
    path = write_image(tmp_path / f'nan{suffix}', array)

    with pytest.raises(SliceReadError) as error:
        read_slice(path)
    message = str(error.value)
    assert str(path) in message
    assert '3 NaN' in message
    assert '2 infinite' in message
    assert 'nan_to_num' in message


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_nan_in_other_slice_ignored(tmp_path, dtype):
    volume = np.stack([textured_phantom(seed=seed) for seed in range(3)])
    volume = volume.astype(dtype)
    volume[1, 10:14, 20] = np.nan
    path = write_image(tmp_path / 'volume.nii.gz', volume)

    for slice_index in (0, 2):
        image = read_slice(path, slice_index=slice_index)
        np.testing.assert_array_equal(pixels(image),
                                      volume[slice_index].astype(np.float32))
    with pytest.raises(SliceReadError, match='4 NaN and 0 infinite'):
        read_slice(path, slice_index=1)


# Raster files.


def test_png_rgba_opaque_reads_gray(tmp_path):
    gray = (np.arange(12 * 16) % 251).astype(np.uint8).reshape(12, 16)
    alpha = np.full_like(gray, 255)
    path = save_png(tmp_path / 'gray.png',
                    np.stack([gray, gray, gray, alpha], axis=-1), 'RGBA')

    image = read_slice(path)

    assert image.GetNumberOfComponentsPerPixel() == 1
    np.testing.assert_array_equal(pixels(image), gray)


def test_png_rgba_transparent_raises(tmp_path):
    gray = (np.arange(12 * 16) % 251).astype(np.uint8).reshape(12, 16)
    alpha = np.full_like(gray, 255)
    alpha[:2, :3] = 0
    path = save_png(tmp_path / 'transparent.png',
                    np.stack([gray, gray, gray, alpha], axis=-1), 'RGBA')

    with pytest.raises(SliceReadError, match='6 pixels are not fully '
                       'opaque') as error:
        read_slice(path)
    assert str(path) in str(error.value)


def test_png_rgba_colour_raises(tmp_path):
    rgba = np.full((12, 16, 4), 255, np.uint8)
    rgba[4:8, 4:8, 0] = 10
    path = save_png(tmp_path / 'overlay.png', rgba, 'RGBA')

    with pytest.raises(SliceReadError, match='colour') as error:
        read_slice(path)
    assert str(path) in str(error.value)


def test_png_gray_alpha_unreadable(tmp_path):
    gray = (np.arange(12 * 16) % 251).astype(np.uint8).reshape(12, 16)
    path = save_png(tmp_path / 'gray_alpha.png',
                    np.stack([gray, np.full_like(gray, 255)], axis=-1), 'LA')

    with pytest.raises(SliceReadError, match='grayscale, RGB or RGBA'):
        read_slice(path)


def test_png_16_bit_keeps_values(tmp_path):
    array = (np.arange(12 * 16, dtype=np.uint16) * 311).reshape(12, 16)
    path = save_png(tmp_path / 'deep.png', array)

    image = read_slice(path)

    assert pixels(image).max() > 255
    np.testing.assert_array_equal(pixels(image), array.astype(np.float32))


# Pixel-count limit.


def test_max_pixels_default_exported():
    parameter = inspect.signature(read_slice).parameters['max_pixels']

    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    assert parameter.default == DEFAULT_MAX_PIXELS
    assert DEFAULT_MAX_PIXELS >= 1024 * 1024 * 20


def test_max_pixels_raster_raises(tmp_path):
    path = save_png(tmp_path / 'big.png', textured_phantom().astype(np.uint8))

    with pytest.raises(SliceReadError) as error:
        read_slice(path, max_pixels=4000)
    message = str(error.value)
    assert str(path) in message
    assert '64 x 64 = 4096 pixels' in message
    assert 'max_pixels=4000' in message
    assert 'raise max_pixels' in message
    assert read_slice(path, max_pixels=4096).GetSize() == (64, 64)
    assert read_slice(path, max_pixels=None).GetSize() == (64, 64)


def test_max_pixels_counts_all_slices(tmp_path):
    volume = np.stack([textured_phantom(seed=seed) for seed in range(3)])
    path = write_image(tmp_path / 'volume.nii.gz', volume)

    with pytest.raises(SliceReadError, match='64 x 64 x 3 = 12288'):
        read_slice(path, slice_index=0, max_pixels=10000)


def test_max_pixels_checked_before_decoding(tmp_path):
    # The header declares 100000 x 100000 pixels but the file contains
    # 16 bytes, so decoding would fail with another error.
    path = tmp_path / 'huge.mha'
    header = ('ObjectType = Image\nNDims = 2\nDimSize = 100000 100000\n'
              'ElementType = MET_UCHAR\nElementDataFile = LOCAL\n')
    path.write_bytes(header.encode('ascii') + bytes(16))

    with pytest.raises(SliceReadError, match='10000000000 pixels'):
        read_slice(path)


@pytest.mark.parametrize('max_pixels', [0, -5])
def test_max_pixels_invalid(tmp_path, max_pixels):
    path = write_image(tmp_path / 'slice.nii.gz', textured_phantom())

    with pytest.raises(SliceReadError, match=f'max_pixels={max_pixels}'):
        read_slice(path, max_pixels=max_pixels)
