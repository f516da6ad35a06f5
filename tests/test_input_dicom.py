"""Tests of messy DICOM input: compression, photometry, series, frames."""
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from helpers import PHI_STRINGS, SAGITTAL, write_dicom_series
from stbsm_mm.io import SliceReadError, read_slice

# Identifying tags added to every test file, all of which must stay out of
# error messages.
PHI_TAGS = {
    'PatientName': 'ZZPHANTOM^SECRETNAME',
    'PatientID': 'ZZPID-271828',
    'PatientBirthDate': '19010203',
    'InstitutionName': 'ZZPHANTOM HOSPITAL',
    'AccessionNumber': 'ZZACC-314159',
    'StudyDate': '19020304',
    'SeriesDate': '19020304',
    'ReferringPhysicianName': 'ZZDOCTOR^HIDDEN',
}
PHI_VALUES = tuple(PHI_STRINGS) + tuple(PHI_TAGS.values()) + ('HIDDEN',)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
HTJ2K_LOSSLESS = '1.2.840.10008.1.2.4.201'
JPEG_XL_LOSSLESS = '1.2.840.10008.1.2.4.110'


def ramp(height: int = 12, width: int = 16, offset: int = 0) -> np.ndarray:
    """A uint16 slice whose every pixel differs from its neighbours."""
    values = np.arange(height * width, dtype=np.uint16).reshape(height, width)
    return values * np.uint16(7) + np.uint16(offset)


def pixels(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def assert_no_phi(message: str) -> None:
    for value in PHI_VALUES:
        assert value not in message


def edit_files(folder: Path, **tags) -> None:
    """Set DICOM tags in every file of a folder, the PHI tags included."""
    for path in sorted(folder.glob('*.dcm')):
        dataset = pydicom.dcmread(path)
        for keyword, value in {**PHI_TAGS, **tags}.items():
            setattr(dataset, keyword, value)
        dataset.save_as(path, enforce_file_format=True)


def write_series(folder: Path,
                 offsets: Sequence[int] = (100, 200, 300),
                 positions_x: Sequence[float] = (4.0, 0.0, -4.0),
                 instance_numbers: Sequence[int] = (1, 2, 3),
                 **tags) -> Path:
    """Write a sagittal series of ramps, one file per slice.

    The default positions put the slices in the order of ``offsets`` along
    the series normal, which points to -x (patient right).
    """
    names = [f'IM{k:04d}.dcm' for k in range(len(offsets))]
    write_dicom_series(folder, [ramp(offset=offset) for offset in offsets],
                       positions_x, instance_numbers, names)
    edit_files(folder, **tags)
    return folder


def write_single(path: Path, array: np.ndarray, **tags) -> Path:
    """Write one sagittal MR file, then set ``tags`` on it."""
    write_dicom_series(path.parent, [array], [0.0], [1], [path.name])
    dataset = pydicom.dcmread(path)
    for keyword, value in {**PHI_TAGS, **tags}.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)
    return path


def set_transfer_syntax(path: Path, uid: str) -> Path:
    """Relabel an encapsulated (RLE) file with another transfer syntax.

    The pixel data stay RLE fragments, which no other decoder accepts.
    pydicom 3.0 refuses to write UIDs it does not know (JPEG XL), so those
    replace the High-Throughput JPEG 2000 UID, of the same length, in the
    file meta bytes.
    """
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = HTJ2K_LOSSLESS
    dataset.save_as(path, enforce_file_format=True)
    if uid != HTJ2K_LOSSLESS:
        data = path.read_bytes()
        assert len(uid) == len(HTJ2K_LOSSLESS)
        assert data.count(HTJ2K_LOSSLESS.encode('ascii')) == 1
        path.write_bytes(data.replace(HTJ2K_LOSSLESS.encode('ascii'),
                                      uid.encode('ascii')))
    return path


# Compressed transfer syntaxes.


def test_rle_file_matches_uncompressed(tmp_path):
    plain = write_single(tmp_path / 'plain' / 'a.dcm', ramp())
    dataset = pydicom.dcmread(plain)
    dataset.compress(RLELossless)
    rle = tmp_path / 'rle' / 'a.dcm'
    rle.parent.mkdir()
    dataset.save_as(rle, enforce_file_format=True)

    assert pydicom.dcmread(rle).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(pixels(read_slice(rle)),
                                  pixels(read_slice(plain)))
    np.testing.assert_array_equal(pixels(read_slice(rle.parent)), ramp())


def test_rle_series_matches_uncompressed(tmp_path):
    folder = write_series(tmp_path / 'series')
    for path in folder.glob('*.dcm'):
        dataset = pydicom.dcmread(path)
        dataset.compress(RLELossless)
        dataset.save_as(path, enforce_file_format=True)

    for slice_index, offset in enumerate((100, 200, 300)):
        image = read_slice(folder, slice_index=slice_index)
        np.testing.assert_array_equal(pixels(image), ramp(offset=offset))
    np.testing.assert_array_equal(
        pixels(read_slice(folder, instance_number=2)), ramp(offset=200))


def write_encapsulated(path: Path, array: np.ndarray, frame: bytes,
                       uid: str) -> Path:
    """Write one file whose pixel data is one compressed frame."""
    bits = array.dtype.itemsize * 8
    write_single(path, array.astype(np.uint16))
    dataset = pydicom.dcmread(path)
    dataset.BitsAllocated = dataset.BitsStored = bits
    dataset.HighBit = bits - 1
    dataset.PixelData = encapsulate([frame])
    dataset['PixelData'].VR = 'OB'
    dataset.file_meta.TransferSyntaxUID = uid
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_jpeg_baseline_decoded(tmp_path):
    rows, cols = np.mgrid[0:64, 0:64]
    array = ((rows * 3 + cols * 2) % 256).astype(np.uint8)
    _, encoded = cv2.imencode('.jpg', array, [cv2.IMWRITE_JPEG_QUALITY, 95])
    path = write_encapsulated(tmp_path / 'jpeg' / 'a.dcm', array,
                              encoded.tobytes(), JPEGBaseline8Bit)

    image = read_slice(path)

    # JPEG baseline is lossy: compare with OpenCV's decoding of the frame.
    np.testing.assert_array_equal(pixels(image),
                                  cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE))
    assert np.abs(pixels(image) - array).max() < 20


def test_jpeg_2000_lossless_decoded(tmp_path):
    rows, cols = np.mgrid[0:64, 0:64]
    array = (rows * 300 + cols * 7).astype(np.uint16)
    _, encoded = cv2.imencode('.jp2', array,
                              [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, 1000])
    path = write_encapsulated(tmp_path / 'j2k' / 'a.dcm', array,
                              encoded.tobytes(), JPEG2000Lossless)

    for source in (path, path.parent):
        np.testing.assert_array_equal(pixels(read_slice(source)), array)


@pytest.fixture
def rle_file(tmp_path):
    path = write_single(tmp_path / 'src' / 'a.dcm', ramp())
    dataset = pydicom.dcmread(path)
    dataset.compress(RLELossless)
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize('uid, name', [
    (HTJ2K_LOSSLESS, 'High-Throughput JPEG 2000'),
    (JPEG_XL_LOSSLESS, 'JPEG XL Lossless'),
])
def test_undecodable_syntax_file(rle_file, uid, name):
    path = set_transfer_syntax(rle_file, uid)

    with pytest.raises(SliceReadError) as error:
        read_slice(path)
    message = str(error.value)
    assert str(path) in message
    assert name in message
    assert uid in message
    assert 'gdcmconv --raw' in message
    assert_no_phi(message)


def test_undecodable_syntax_in_series(tmp_path):
    folder = write_series(tmp_path / 'series')
    bad = folder / 'IM0001.dcm'
    dataset = pydicom.dcmread(bad)
    dataset.compress(RLELossless)
    dataset.save_as(bad, enforce_file_format=True)
    set_transfer_syntax(bad, HTJ2K_LOSSLESS)

    for choice in (dict(slice_index=0), dict(instance_number=2)):
        with pytest.raises(SliceReadError) as error:
            read_slice(folder, **choice)
        message = str(error.value)
        assert str(bad) in message
        assert HTJ2K_LOSSLESS in message
        assert 'gdcmconv --raw' in message
        assert_no_phi(message)


def test_unlisted_syntax_in_series(tmp_path):
    # GDCM leaves a file it cannot parse out of the series, which would
    # shift slice_index by one.
    folder = write_series(tmp_path / 'series')
    bad = folder / 'IM0001.dcm'
    dataset = pydicom.dcmread(bad)
    dataset.compress(RLELossless)
    dataset.save_as(bad, enforce_file_format=True)
    set_transfer_syntax(bad, JPEG_XL_LOSSLESS)

    for choice in (dict(slice_index=1), dict(instance_number=1)):
        with pytest.raises(SliceReadError) as error:
            read_slice(folder, **choice)
        message = str(error.value)
        assert str(bad) in message
        assert 'JPEG XL Lossless' in message
        assert 'left the file out of the series' in message
        assert_no_phi(message)


# MONOCHROME1.


@pytest.mark.parametrize('bits_stored', [16, 12])
def test_monochrome1_file_matches_twin(tmp_path, bits_stored):
    stored = ramp()
    white = (1 << bits_stored) - 1
    common = dict(BitsStored=bits_stored, HighBit=bits_stored - 1)
    inverted = write_single(tmp_path / 'm1' / 'a.dcm', stored,
                            PhotometricInterpretation='MONOCHROME1',
                            **common)
    twin = write_single(tmp_path / 'm2' / 'a.dcm',
                        (white - stored).astype(np.uint16), **common)

    expected = (white - stored).astype(np.float32)
    for source in (inverted, inverted.parent):
        np.testing.assert_array_equal(pixels(read_slice(source)), expected)
    np.testing.assert_array_equal(pixels(read_slice(twin)), expected)


def test_monochrome1_series_paths(tmp_path):
    folder = write_series(tmp_path / 'm1',
                          PhotometricInterpretation='MONOCHROME1')

    for slice_index, offset in enumerate((100, 200, 300)):
        expected = 65535 - ramp(offset=offset).astype(np.float32)
        by_index = read_slice(folder, slice_index=slice_index)
        by_number = read_slice(folder, instance_number=slice_index + 1)
        np.testing.assert_array_equal(pixels(by_index), expected)
        np.testing.assert_array_equal(pixels(by_number), expected)


# Rescale slope and intercept.


@pytest.mark.parametrize('slope, intercept', [(2.0, -100.0), (0.5, 0.25)])
def test_rescale_applied_once(tmp_path, slope, intercept):
    path = write_single(tmp_path / 'single' / 'a.dcm', ramp(),
                        RescaleSlope=slope, RescaleIntercept=intercept)
    folder = write_series(tmp_path / 'series', RescaleSlope=slope,
                          RescaleIntercept=intercept)

    expected = ramp().astype(np.float64) * slope + intercept
    np.testing.assert_allclose(pixels(read_slice(path)), expected)
    np.testing.assert_allclose(pixels(read_slice(folder, slice_index=0)),
                               ramp(offset=100) * slope + intercept)
    np.testing.assert_allclose(pixels(read_slice(folder, instance_number=3)),
                               ramp(offset=300) * slope + intercept)


# Several series in one folder.


def add_series(folder: Path, offset: int, description: str,
               orientation: Sequence[float], count: int = 2) -> None:
    staging = folder.parent / f'staging_{offset}'
    write_series(staging, offsets=[offset + 10 * k for k in range(count)],
                 positions_x=[-4.0 * k for k in range(count)],
                 instance_numbers=list(range(1, count + 1)),
                 SeriesDescription=description,
                 ImageOrientationPatient=list(orientation))
    folder.mkdir(parents=True, exist_ok=True)
    for path in staging.glob('*.dcm'):
        path.rename(folder / f'{offset}_{path.name}')


def test_series_picks_sagittal_t2(tmp_path):
    folder = tmp_path / 'study'
    add_series(folder, 1000, 'SAG T1 TSE', SAGITTAL)
    add_series(folder, 2000, 'AX T2 TSE', AXIAL)
    add_series(folder, 3000, 'SAG STIR', SAGITTAL)
    add_series(folder, 4000, 't2_tse_sag', SAGITTAL, count=3)

    for slice_index in range(3):
        image = read_slice(folder, slice_index=slice_index)
        np.testing.assert_array_equal(
            pixels(image), ramp(offset=4000 + 10 * slice_index))
    np.testing.assert_array_equal(
        pixels(read_slice(folder, instance_number=2)), ramp(offset=4010))


def test_series_two_sagittal_t2_raise(tmp_path):
    folder = tmp_path / 'study'
    add_series(folder, 1000, 'SAG T2 TSE', SAGITTAL, count=3)
    add_series(folder, 2000, 'SAG T2 FS', SAGITTAL)
    add_series(folder, 3000, 'AX T2', AXIAL)
    series_uids = {
        str(pydicom.dcmread(path).SeriesInstanceUID)
        for path in folder.glob('*.dcm')
    }

    with pytest.raises(SliceReadError) as error:
        read_slice(folder, slice_index=0)
    message = str(error.value)
    assert str(folder) in message
    assert '3 DICOM series' in message
    assert '"SAG T2 TSE", sagittal, 3 files' in message
    assert '"SAG T2 FS", sagittal, 2 files' in message
    assert '"AX T2", axial, 2 files' in message
    assert_no_phi(message)
    for uid in series_uids:
        assert uid not in message


def test_series_without_t2_raise(tmp_path):
    folder = tmp_path / 'study'
    add_series(folder, 1000, 'SAG T1', SAGITTAL)
    add_series(folder, 2000, 'SAG T2 STIR', SAGITTAL)

    with pytest.raises(SliceReadError,
                       match='none of them is a sagittal') as error:
        read_slice(folder, slice_index=0)
    assert '"SAG T2 STIR", sagittal, 2 files' in str(error.value)
    assert_no_phi(str(error.value))


# Slices out of order.


def test_series_out_of_order(tmp_path):
    offsets = (100, 200, 300, 400)
    positions_x = (8.0, -4.0, 12.0, 0.0)
    numbers = (4, 1, 2, 3)
    folder = tmp_path / 'series'
    names = ('IM0009.dcm', 'IM0002.dcm', 'IM0001.dcm', 'IM0005.dcm')
    write_dicom_series(folder, [ramp(offset=offset) for offset in offsets],
                       positions_x, numbers, names)

    # Order by distance along the series normal (cross product of the row
    # and column directions).
    normal = np.cross(SAGITTAL[:3], SAGITTAL[3:])
    distance = [np.dot((x, -20.0, 30.0), normal) for x in positions_x]
    ordered = [offsets[k] for k in np.argsort(distance)]
    assert ordered != list(offsets)

    for slice_index, offset in enumerate(ordered):
        image = read_slice(folder, slice_index=slice_index)
        np.testing.assert_array_equal(pixels(image), ramp(offset=offset))
    for number, offset in zip(numbers, offsets):
        image = read_slice(folder, instance_number=number)
        np.testing.assert_array_equal(pixels(image), ramp(offset=offset))


def test_series_duplicate_instance_number(tmp_path):
    folder = write_series(tmp_path / 'series', instance_numbers=(1, 2, 2))

    with pytest.raises(SliceReadError, match='2 slices have InstanceNumber'):
        read_slice(folder, instance_number=2)


# Multi-frame files.


def write_multiframe(path: Path, frames: np.ndarray,
                     enhanced: bool) -> Path:
    """Write one DICOM file holding ``frames`` (frames, rows, columns)."""
    write_single(path, frames[0])
    dataset = pydicom.dcmread(path)
    dataset.NumberOfFrames = len(frames)
    dataset.PixelData = np.ascontiguousarray(frames, np.uint16).tobytes()
    if enhanced:
        dataset.SOPClassUID = '1.2.840.10008.5.1.4.1.1.4.1'
        dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        del dataset.PixelSpacing
        shared = Dataset()
        measures = Dataset()
        measures.PixelSpacing = [0.5, 0.8]
        measures.SliceThickness = 4.0
        shared.PixelMeasuresSequence = [measures]
        orientation = Dataset()
        orientation.ImageOrientationPatient = list(SAGITTAL)
        shared.PlaneOrientationSequence = [orientation]
        dataset.SharedFunctionalGroupsSequence = [shared]
        per_frame = []
        for k in range(len(frames)):
            group, position = Dataset(), Dataset()
            position.ImagePositionPatient = [4.0 * k, -20.0, 30.0]
            group.PlanePositionSequence = [position]
            per_frame.append(group)
        dataset.PerFrameFunctionalGroupsSequence = per_frame
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize('enhanced', [False, True])
def test_multiframe_slice_index(tmp_path, enhanced):
    frames = np.stack([ramp(offset=1000 * k) for k in range(3)])
    path = write_multiframe(tmp_path / 'mf' / 'frames.dcm', frames, enhanced)

    for source in (path, path.parent):
        for slice_index in range(3):
            image = read_slice(source, slice_index=slice_index)
            assert image.GetDimension() == 2
            np.testing.assert_array_equal(pixels(image), frames[slice_index])
    if enhanced:
        spacing = read_slice(path, slice_index=0).GetSpacing()
        assert spacing == pytest.approx((0.8, 0.5))


def test_multiframe_needs_slice_index(tmp_path):
    frames = np.stack([ramp(offset=1000 * k) for k in range(3)])
    path = write_multiframe(tmp_path / 'mf' / 'frames.dcm', frames, False)

    with pytest.raises(SliceReadError, match='contains 3 slices'):
        read_slice(path)
    with pytest.raises(SliceReadError, match='outside 0..2'):
        read_slice(path.parent, slice_index=3)
    with pytest.raises(SliceReadError, match='set slice_index') as error:
        read_slice(path.parent, instance_number=1)
    assert_no_phi(str(error.value))


def test_dicom_max_pixels(tmp_path):
    folder = write_series(tmp_path / 'series')

    with pytest.raises(SliceReadError) as error:
        read_slice(folder, slice_index=0, max_pixels=500)
    message = str(error.value)
    assert '16 x 12 x 3 = 576 pixels' in message
    assert 'max_pixels=500' in message
    assert_no_phi(message)
