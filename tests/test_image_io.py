"""Tests of read_slice on phantom files: NIfTI, PNG and DICOM series."""
import numpy as np
import PIL.Image
import pytest
import SimpleITK as sitk

from helpers import SAGITTAL, write_dicom_series, write_image
from stbsm_mm.io import SliceReadError, read_slice


def ramp(height: int = 12, width: int = 16, offset: int = 0) -> np.ndarray:
    """A uint16 slice whose every pixel differs from its neighbours."""
    values = np.arange(height * width, dtype=np.uint16).reshape(height, width)
    return values + np.uint16(offset)


def pixels(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


# 2-D and 3-D files.


def test_nifti_2d_keeps_spacing(tmp_path):
    path = write_image(tmp_path / 'slice.nii.gz', ramp(), spacing=(0.6, 1.3))

    image = read_slice(path)

    assert image.GetDimension() == 2
    assert image.GetSize() == (16, 12)
    assert image.GetSpacing() == pytest.approx((0.6, 1.3))
    assert image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(pixels(image), ramp())


def test_nifti_3d_slice_index(tmp_path):
    volume = np.stack([ramp(offset=1000 * k) for k in range(3)])
    path = write_image(tmp_path / 'volume.nii.gz', volume,
                       spacing=(0.5, 0.9, 4.0))

    image = read_slice(path, slice_index=2)

    assert image.GetDimension() == 2
    assert image.GetSpacing() == pytest.approx((0.5, 0.9))
    np.testing.assert_array_equal(pixels(image), ramp(offset=2000))


def test_nifti_3d_needs_slice_index(tmp_path):
    volume = np.stack([ramp(offset=1000 * k) for k in range(3)])
    path = write_image(tmp_path / 'volume.nii.gz', volume)

    with pytest.raises(SliceReadError, match='contains 3 slices') as error:
        read_slice(path)
    assert str(path) in str(error.value)
    assert 'slice_index' in str(error.value)


@pytest.mark.parametrize('slice_index', [3, -1])
def test_nifti_3d_slice_index_out_of_range(tmp_path, slice_index):
    volume = np.stack([ramp(offset=1000 * k) for k in range(3)])
    path = write_image(tmp_path / 'volume.nii.gz', volume)

    with pytest.raises(SliceReadError, match=r'outside 0\.\.2'):
        read_slice(path, slice_index=slice_index)


def test_one_slice_volume_needs_no_index(tmp_path):
    path = write_image(tmp_path / 'single.nii.gz', ramp()[np.newaxis],
                       spacing=(0.7, 0.4, 5.0))

    image = read_slice(path)

    assert image.GetDimension() == 2
    assert image.GetSpacing() == pytest.approx((0.7, 0.4))
    np.testing.assert_array_equal(pixels(image), ramp())


def test_2d_file_rejects_nonzero_slice_index(tmp_path):
    path = write_image(tmp_path / 'slice.nii.gz', ramp())

    with pytest.raises(SliceReadError, match='2-D image'):
        read_slice(path, slice_index=1)


def test_instance_number_rejected_for_file(tmp_path):
    path = write_image(tmp_path / 'slice.nii.gz', ramp())

    with pytest.raises(SliceReadError, match='DICOM folders only'):
        read_slice(path, instance_number=1)


# Raster files.


def test_png_gray_stored_as_rgb(tmp_path):
    gray = (np.arange(12 * 16) % 251).astype(np.uint8).reshape(12, 16)
    path = tmp_path / 'gray_rgb.png'
    PIL.Image.fromarray(np.stack([gray] * 3, axis=-1), mode='RGB').save(path)

    image = read_slice(path)

    assert image.GetNumberOfComponentsPerPixel() == 1
    assert image.GetSize() == (16, 12)
    np.testing.assert_array_equal(pixels(image), gray)


def test_png_colour_raises(tmp_path):
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[4:8, 4:8, 1] = 90
    path = tmp_path / 'overlay.png'
    PIL.Image.fromarray(rgb, mode='RGB').save(path)

    with pytest.raises(SliceReadError, match='colour') as error:
        read_slice(path)
    assert str(path) in str(error.value)


def test_missing_path_raises(tmp_path):
    path = tmp_path / 'no_such_slice.nii.gz'

    with pytest.raises(SliceReadError, match='no such file') as error:
        read_slice(path)
    assert str(path) in str(error.value)


def test_unreadable_file_raises(tmp_path):
    path = tmp_path / 'broken.nii.gz'
    path.write_bytes(b'not an image')

    with pytest.raises(SliceReadError, match='could not read') as error:
        read_slice(path)
    assert str(path) in str(error.value)


# DICOM series.


@pytest.fixture
def sagittal_series(tmp_path):
    """Write three sagittal slices whose names, positions and numbers disagree.

    Returns the folder and the slices' offsets in the order of their
    position along the series normal.
    """
    offsets = (100, 200, 300)
    positions_x = (-4.0, 4.0, 0.0)
    folder = write_dicom_series(
        tmp_path / 'series',
        [ramp(offset=offset) for offset in offsets],
        positions_x=positions_x,
        instance_numbers=(2, 3, 1),
        file_names=('IM0001.dcm', 'IM0002.dcm', 'IM0003.dcm'),
        pixel_spacing=(0.5, 0.8))

    # The series normal is the cross product of the row and column
    # directions. Slices are ordered by their position along it.
    normal = np.cross(SAGITTAL[:3], SAGITTAL[3:])
    distance = [np.dot((x, -20.0, 30.0), normal) for x in positions_x]
    ordered = [offsets[k] for k in np.argsort(distance)]
    return folder, ordered


def test_dicom_slice_index_in_position_order(sagittal_series):
    folder, ordered = sagittal_series

    for slice_index, offset in enumerate(ordered):
        image = read_slice(folder, slice_index=slice_index)
        np.testing.assert_array_equal(pixels(image), ramp(offset=offset),
                                      err_msg=f'slice_index={slice_index}')


def test_dicom_spacing_from_pixel_spacing(sagittal_series):
    folder, _ = sagittal_series

    image = read_slice(folder, slice_index=0)

    # PixelSpacing is (row spacing, column spacing) = (y, x).
    assert image.GetDimension() == 2
    assert image.GetSize() == (16, 12)
    assert image.GetSpacing() == pytest.approx((0.8, 0.5))


@pytest.mark.parametrize('instance_number, offset', [(1, 300), (2, 100),
                                                     (3, 200)])
def test_dicom_instance_number(sagittal_series, instance_number, offset):
    folder, _ = sagittal_series

    image = read_slice(folder, instance_number=instance_number)

    assert image.GetDimension() == 2
    assert image.GetSpacing() == pytest.approx((0.8, 0.5))
    np.testing.assert_array_equal(pixels(image), ramp(offset=offset))


def test_dicom_unknown_instance_number(sagittal_series):
    folder, _ = sagittal_series

    with pytest.raises(SliceReadError, match='InstanceNumber 7'):
        read_slice(folder, instance_number=7)


def test_dicom_series_needs_slice_choice(sagittal_series):
    folder, _ = sagittal_series

    with pytest.raises(SliceReadError, match='contains 3 slices'):
        read_slice(folder)


def test_dicom_both_choices_rejected(sagittal_series):
    folder, _ = sagittal_series

    with pytest.raises(SliceReadError, match='give one of them'):
        read_slice(folder, slice_index=0, instance_number=1)


def test_folder_without_dicom_raises(tmp_path):
    (tmp_path / 'empty').mkdir()

    with pytest.raises(SliceReadError, match='no DICOM series'):
        read_slice(tmp_path / 'empty')
