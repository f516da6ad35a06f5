"""Read one 2-D MR slice as a SimpleITK image, keeping its spacing.

A slice comes from a 2-D file (NIfTI, MHA, NRRD, PNG, JPEG), from one slice
of a 3-D file, from one frame of a multi-frame DICOM file, or from a DICOM
folder read as a series. The result is always a 2-D, single-component,
float32 ``SimpleITK.Image`` whose spacing and origin are those of the source
slice.

SimpleITK reads DICOM with GDCM, which applies RescaleSlope and
RescaleIntercept and inverts MONOCHROME1 pixels, so this module does neither
itself. Error messages name the file, never the patient: no DICOM header
value other than the series description, orientation, frame count and
transfer syntax goes into them.
"""
import gzip
import re
import struct
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import pydicom
import SimpleITK as sitk
from mmengine.logging import MMLogger
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, UncompressedTransferSyntaxes

PathLike = Union[str, Path]

# The largest number of pixels (all slices of the source together) that
# read_slice decodes by default, 400 MB at 4 bytes per pixel. A 512 x 512 x
# 380 volume fits, a 20000 x 20000 scanned raster does not.
DEFAULT_MAX_PIXELS = 100_000_000

_RASTER_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')

_DECOMPRESS_HINT = ('Decompress it first, for example with `gdcmconv --raw '
                    'IN.dcm OUT.dcm` (GDCM) or `dcmdjpeg IN.dcm OUT.dcm` '
                    '(DCMTK).')

# DICOM PS3.6 transfer syntaxes newer than pydicom 3.0's UID dictionary.
_NEWER_TRANSFER_SYNTAXES = {
    '1.2.840.10008.1.2.4.110': 'JPEG XL Lossless',
    '1.2.840.10008.1.2.4.111': 'JPEG XL JPEG Recompression',
    '1.2.840.10008.1.2.4.112': 'JPEG XL',
    '1.2.840.10008.1.2.8.1': 'Deflated Image Frame Compression',
}

# Series descriptions of T2-weighted series that are not the plain T2 image.
_NOT_PLAIN_T2 = re.compile(r'T1|STIR|TIRM|FLAIR|T2\*')


class SliceReadError(ValueError):
    """An MR slice could not be read or is not the slice that was asked for."""


def read_slice(path: PathLike,
               slice_index: Optional[int] = None,
               instance_number: Optional[int] = None,
               *,
               max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> sitk.Image:
    """Read one 2-D slice from a file or a DICOM folder.

    Args:
        path: A 2-D or 3-D image file readable by SimpleITK (a multi-frame
            DICOM file included), or a folder holding DICOM files. A folder
            with several series must contain exactly one sagittal series
            whose SeriesDescription names T2 (and not T1, STIR, TIRM, FLAIR
            or T2*); that series is read.
        slice_index: 0-based index of the slice along the third axis, needed
            when the source contains more than one slice. For a DICOM series
            the slices are ordered by position along the series normal, as
            SimpleITK's series reader orders them; for a multi-frame file it
            is the frame index.
        instance_number: DICOM InstanceNumber of the slice; an alternative
            to ``slice_index`` for DICOM folders with one file per slice.
        max_pixels: The largest number of pixels the source may contain, all
            slices together, checked from the header before the pixels are
            decoded. ``None`` disables the check.

    Returns:
        SimpleITK.Image: a 2-D float32 image with the source's spacing.

    Raises:
        SliceReadError: the file is missing, unreadable, or compressed in a
            transfer syntax SimpleITK cannot decode. The source is larger
            than ``max_pixels``. The folder contains several series, and
            none or several of them are sagittal T2. The source contains
            several slices and none was chosen, or the chosen one is
            absent. The slice is coloured, blank (one value everywhere) or
            contains NaN or infinite pixels.

    Examples:
        >>> import numpy as np, SimpleITK as sitk, tempfile, os
        >>> image = sitk.GetImageFromArray(
        ...     np.arange(24, dtype=np.uint16).reshape(4, 6))
        >>> image.SetSpacing((0.5, 0.75))
        >>> path = os.path.join(tempfile.mkdtemp(), 'slice.nii.gz')
        >>> sitk.WriteImage(image, path)
        >>> read_slice(path).GetSpacing()
        (0.5, 0.75)
    """
    path = Path(path)
    _check_arguments(path, slice_index, instance_number, max_pixels)

    if path.is_dir():
        volume = _read_dicom_folder(path, instance_number, max_pixels)
    else:
        if instance_number is not None:
            raise SliceReadError(
                f'{path}: instance_number applies to DICOM folders only; '
                'use slice_index for a 3-D file.')
        volume = _read_file(path, max_pixels)

    image = _select_slice(volume, slice_index, path)
    _check_pixels(image, path, slice_index)
    return image


def _check_arguments(path: Path, slice_index: Optional[int],
                     instance_number: Optional[int],
                     max_pixels: Optional[int]) -> None:
    if not path.exists():
        raise SliceReadError(
            f'{path}: no such file or folder. Check the image or dicom '
            'column of rois.csv; relative paths start at the cohort folder.')
    if slice_index is not None and instance_number is not None:
        raise SliceReadError(
            f'{path}: both slice_index={slice_index} and instance_number='
            f'{instance_number} are set; give one of them.')
    for name, value in (('slice_index', slice_index),
                        ('instance_number', instance_number),
                        ('max_pixels', max_pixels)):
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, (int, np.integer))):
            raise SliceReadError(
                f'{path}: {name}={value!r} is not an integer; give a whole '
                'number or leave it empty.')
    if max_pixels is not None and max_pixels < 1:
        raise SliceReadError(
            f'{path}: max_pixels={max_pixels}; use a positive number of '
            'pixels, or None to read images of any size.')


# Files.


def _read_file(path: Path, max_pixels: Optional[int]) -> sitk.Image:
    is_dicom = _has_dicom_preamble(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        if is_dicom:
            raise _dicom_decode_error(path, error) from error
        raise SliceReadError(
            f'{path}: SimpleITK could not read this file '
            f'({_first_line(error)}). Supported: NIfTI, MHA/MHD, NRRD, PNG, JPEG, TIFF, DICOM; a PNG '
            'must be grayscale, RGB or RGBA.') from error
    _check_size(path, reader.GetSize(), max_pixels)

    try:
        image = reader.Execute()
    except RuntimeError as error:
        if is_dicom:
            raise _dicom_decode_error(path, error) from error
        raise SliceReadError(
            f'{path}: SimpleITK could not decode the pixels of this file '
            f'({_first_line(error)}). Re-export the slice.') from error

    if path.suffix.lower() in _RASTER_SUFFIXES:
        image = _raster_to_gray(image, path)
    return image


def _has_dicom_preamble(path: Path) -> bool:
    """Tell whether a file starts with the DICOM preamble and 'DICM'."""
    with open(path, 'rb') as file:
        return file.read(132)[128:] == b'DICM'


def _check_size(path: Path, size: Sequence[int],
                max_pixels: Optional[int]) -> None:
    count = int(np.prod([int(length) for length in size], dtype=np.int64))
    if max_pixels is not None and count > max_pixels:
        shape = ' x '.join(str(int(length)) for length in size)
        raise SliceReadError(
            f'{path}: the image is {shape} = {count} pixels, more than the '
            f'limit max_pixels={max_pixels}. Check that this is the MR slice '
            'you meant; if it is, raise max_pixels.')


# DICOM folders.


class _Series(NamedTuple):
    """Description of one series of a DICOM folder, for error messages."""

    file_names: List[str]
    description: str
    plane: str


def _read_dicom_folder(folder: Path, instance_number: Optional[int],
                       max_pixels: Optional[int]) -> sitk.Image:
    file_names = _choose_series(folder)

    reader = sitk.ImageFileReader()
    reader.SetFileName(file_names[0])
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise _dicom_decode_error(Path(file_names[0]), error) from error
    size = list(reader.GetSize())
    frames = size[2] if len(size) > 2 else 1
    _check_size(folder, size[:2] + [frames * len(file_names)], max_pixels)

    # A multi-frame file contains the whole volume, one frame per slice.
    # NOTE: slice_index counts frames in the order the file stores them;
    # unlike the slices of a series, they are not sorted by position.
    if len(file_names) == 1:
        if instance_number is not None and frames > 1:
            raise SliceReadError(
                f'{folder}: a multi-frame DICOM file of {frames} frames; '
                'instance_number cannot choose a frame, so set slice_index '
                '(0-based frame index) instead.')
        if instance_number is not None:
            _check_instance_number(file_names, instance_number, folder)
        return _read_dicom_file(file_names[0])

    if instance_number is not None:
        matches = _check_instance_number(file_names, instance_number, folder)
        return _read_dicom_file(matches[0])

    series_reader = sitk.ImageSeriesReader()
    series_reader.SetFileNames(file_names)
    try:
        return series_reader.Execute()
    except RuntimeError as error:
        # Find the file that fails, to name it and its transfer syntax.
        for file_name in file_names:
            _read_dicom_file(file_name)
        raise SliceReadError(
            f'{folder}: SimpleITK could not read the DICOM series '
            f'({_first_line(error)}). Keep the files of one series, of one '
            'size, in the folder.') from error


def _choose_series(folder: Path) -> List[str]:
    """Return the file names of the series to read, in position order."""
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise SliceReadError(
            f'{folder}: no DICOM series found in this folder. Point the dicom '
            'column at the folder that contains the .dcm files of one series.')
    file_names = [
        list(reader.GetGDCMSeriesFileNames(str(folder), series_id))
        for series_id in series_ids
    ]
    _check_skipped_files(folder, file_names)
    if len(series_ids) == 1:
        return file_names[0]

    series = [_describe_series(names) for names in file_names]
    matches = [
        one for one in series
        if one.plane == 'sagittal' and _is_plain_t2(one.description)
    ]
    if len(matches) == 1:
        MMLogger.get_current_instance().info(
            f'{folder}: {len(series)} DICOM series; reading the sagittal T2 '
            f'series "{matches[0].description}" '
            f'({len(matches[0].file_names)} files).')
        return matches[0].file_names

    listing = '; '.join(
        f'"{one.description}", {one.plane}, {len(one.file_names)} files'
        for one in series)
    found = ('none of them is a sagittal T2 series' if not matches else
             f'{len(matches)} of them are sagittal T2 series')
    raise SliceReadError(
        f'{folder}: {len(series)} DICOM series in one folder, and {found} '
        '(sagittal, with T2 but not T1, STIR, TIRM, FLAIR or T2* in the '
        f'SeriesDescription). Series found: {listing}. Move the sagittal T2 '
        'series into its own folder and point the dicom column of rois.csv '
        'at it.')


def _check_skipped_files(folder: Path, file_names: List[List[str]]) -> None:
    """Raise if GDCM left a compressed DICOM file out of every series.

    GDCM skips files whose transfer syntax it does not know when it lists a
    series, so the series would silently miss a slice and slice_index would
    choose the wrong one.
    """
    listed = {Path(name).resolve() for names in file_names for name in names}
    for path in sorted(folder.iterdir()):
        if (not path.is_file() or path.resolve() in listed
                or not _has_dicom_preamble(path)):
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True,
                                     force=True)
            uid = header.file_meta.get('TransferSyntaxUID')
        except (OSError, InvalidDicomError) as error:
            raise _dicom_decode_error(path, str(error)) from error
        if uid is not None and uid not in UncompressedTransferSyntaxes:
            raise _dicom_decode_error(
                path, 'GDCM left the file out of the series')
        # An uncompressed DICOM file outside every image series is most
        # likely no image (a report or a presentation state, say).
        MMLogger.get_current_instance().info(
            f'{path}: not part of any DICOM image series; ignored.')


def _describe_series(file_names: List[str]) -> _Series:
    header = pydicom.dcmread(file_names[0], stop_before_pixels=True,
                             force=True)
    description = str(header.get('SeriesDescription', '')).strip()
    return _Series(file_names, description or '(no SeriesDescription)',
                   _plane(header))


def _plane(header: pydicom.Dataset) -> str:
    """Name the standard plane nearest to the slices of a DICOM header."""
    orientation = header.get('ImageOrientationPatient')
    if orientation is None and 'SharedFunctionalGroupsSequence' in header:
        shared = header.SharedFunctionalGroupsSequence[0]
        if 'PlaneOrientationSequence' in shared:
            orientation = shared.PlaneOrientationSequence[0].get(
                'ImageOrientationPatient')
    if orientation is None or len(orientation) != 6:
        return 'unknown orientation'

    # The slice normal is the cross product of the row and column
    # directions; its largest component is the nearest patient axis
    # (x = left-right for sagittal slices).
    values = [float(value) for value in orientation]
    normal = np.cross(values[:3], values[3:])
    return ('sagittal', 'coronal', 'axial')[int(np.argmax(np.abs(normal)))]


def _is_plain_t2(description: str) -> bool:
    # NOTE: SeriesDescription is free text chosen by each site. A T2 series
    # described without "T2" (say "SAG TSE") is not recognised, and then the
    # error lists the series so that the user can move it.
    description = description.upper()
    return 'T2' in description and not _NOT_PLAIN_T2.search(description)


def _check_instance_number(file_names: List[str], instance_number: int,
                           folder: Path) -> List[str]:
    matches = [
        name for name in file_names
        if _instance_number(name) == instance_number
    ]
    if not matches:
        raise SliceReadError(
            f'{folder}: no slice with InstanceNumber {instance_number}. '
            'Check the instance_number column of rois.csv.')
    if len(matches) > 1:
        raise SliceReadError(
            f'{folder}: {len(matches)} slices have InstanceNumber '
            f'{instance_number}. Set slice_index instead.')
    return matches


def _instance_number(file_name: str) -> Optional[int]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    reader.ReadImageInformation()
    if not reader.HasMetaDataKey('0020|0013'):
        return None
    return int(reader.GetMetaData('0020|0013').strip())


def _read_dicom_file(file_name: str) -> sitk.Image:
    try:
        return sitk.ReadImage(file_name)
    except RuntimeError as error:
        raise _dicom_decode_error(Path(file_name), error) from error


def _dicom_decode_error(path: Path,
                        error: Union[RuntimeError, str]) -> SliceReadError:
    """Build the error for a DICOM file whose pixels SimpleITK cannot read."""
    reason = _first_line(error) if isinstance(error, Exception) else error
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        uid = UID(str(header.file_meta.TransferSyntaxUID))
    except (OSError, AttributeError, InvalidDicomError):
        return SliceReadError(
            f'{path}: SimpleITK could not read this DICOM file '
            f'({reason}). Re-export it from the scanner or PACS.')

    if uid in UncompressedTransferSyntaxes:
        return SliceReadError(
            f'{path}: SimpleITK could not read the pixels of this DICOM file '
            f'(transfer syntax {uid.name}, {reason}). Re-export '
            'it from the scanner or PACS.')
    name = _NEWER_TRANSFER_SYNTAXES.get(str(uid), uid.name)
    if name == str(uid):
        name = 'an unknown syntax'
    return SliceReadError(
        f'{path}: SimpleITK (GDCM) could not decode the pixels, stored in '
        f'transfer syntax {name} ({uid}): {reason}. '
        f'{_DECOMPRESS_HINT}')


# Slices and pixels.


def _select_slice(volume: sitk.Image, slice_index: Optional[int],
                  path: Path) -> sitk.Image:
    if volume.GetDimension() > 3:
        raise SliceReadError(
            f'{path}: a {volume.GetDimension()}-D image of size '
            f'{volume.GetSize()}. Export one 3-D volume or one slice.')
    if volume.GetDimension() == 2:
        if slice_index not in (None, 0):
            raise SliceReadError(
                f'{path}: slice_index={slice_index}, but this is a 2-D image; '
                'leave slice_index empty.')
        return _to_2d_float(volume, path)

    depth = volume.GetSize()[2]
    if slice_index is None:
        if depth != 1:
            raise SliceReadError(
                f'{path}: contains {depth} slices. Set slice_index '
                '(0-based) or instance_number in rois.csv to choose the '
                'outlined one.')
        slice_index = 0
    if not 0 <= slice_index < depth:
        raise SliceReadError(
            f'{path}: slice_index={slice_index} is outside 0..{depth - 1}, '
            f'because the source contains {depth} slices.')
    return _to_2d_float(volume[:, :, int(slice_index)], path)


def _to_2d_float(image: sitk.Image, path: Path) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        image = _raster_to_gray(image, path)
    return sitk.Cast(image, sitk.sitkFloat32)


def _raster_to_gray(image: sitk.Image, path: Path) -> sitk.Image:
    """Reduce gray+alpha, RGB or RGBA to one channel; grayscale pixels only."""
    components = image.GetNumberOfComponentsPerPixel()
    if components == 1:
        return image
    if components not in (2, 3, 4):
        raise SliceReadError(
            f'{path}: {components} components per pixel. MR slices are '
            'grayscale; export one channel.')

    array = sitk.GetArrayFromImage(image)
    has_alpha = components in (2, 4)
    if has_alpha:
        alpha = array[..., -1]
        opaque = np.iinfo(alpha.dtype).max if np.issubdtype(
            alpha.dtype, np.integer) else 1.0
        transparent = int(np.count_nonzero(alpha != opaque))
        if transparent:
            raise SliceReadError(
                f'{path}: {transparent} pixels are not fully opaque (alpha '
                'channel). Export the slice without transparency.')
    color = array[..., :components - 1] if has_alpha else array
    gray = color[..., 0]
    for channel in range(1, color.shape[-1]):
        if not np.array_equal(gray, color[..., channel]):
            raise SliceReadError(
                f'{path}: a colour image (its R, G and B channels differ). '
                'MR slices are grayscale; export the slice without colour '
                'overlays.')

    result = sitk.GetImageFromArray(np.ascontiguousarray(gray))
    result.CopyInformation(sitk.VectorIndexSelectionCast(image, 0))
    return result


def _check_pixels(image: sitk.Image, path: Path,
                  slice_index: Optional[int]) -> None:
    values = sitk.GetArrayViewFromImage(image)
    nan_count = int(np.count_nonzero(np.isnan(values)))
    inf_count = int(np.count_nonzero(np.isinf(values)))
    if path.is_file() and path.name.lower().endswith(('.nii', '.nii.gz')):
        stored_counts = _count_nifti_non_finite(path, slice_index or 0)
        if stored_counts is not None:
            nan_count, inf_count = stored_counts
    if nan_count or inf_count:
        raise SliceReadError(
            f'{path}: the slice contains {nan_count} NaN and {inf_count} '
            f'infinite pixels out of {values.size}. Bias correction and '
            'normalisation need finite values: re-export the slice, or '
            'replace them (for example with numpy.nan_to_num) and save it '
            'again.')

    low, high = float(values.min()), float(values.max())
    if low == high:
        raise SliceReadError(
            f'{path}: blank slice, every pixel is {low:g}, so there is '
            'nothing to normalise. Check slice_index or instance_number in '
            'rois.csv, or re-export the slice.')


# NIfTI data types that can hold NaN: code -> numpy type.
_NIFTI_FLOAT_TYPES = {16: 'f4', 64: 'f8'}


def _count_nifti_non_finite(path: Path,
                            slice_index: int) -> Optional[Tuple[int, int]]:
    """Count the NaN and infinite pixels of one slice of a NIfTI file.

    SimpleITK 2.5's NIfTI reader returns NaN and infinite pixels as 0, so
    they are counted in the stored data. Returns ``None`` for integer data
    and for headers this parser does not handle (a .hdr/.img pair).
    """
    opener = gzip.open if path.name.lower().endswith('.gz') else open
    with opener(path, 'rb') as file:
        header = file.read(540)

        # NIfTI-1 headers are 348 bytes, NIfTI-2 headers 540 bytes;
        # sizeof_hdr also gives the byte order.
        for order in ('<', '>'):
            header_size = struct.unpack(order + 'i', header[:4])[0]
            if header_size == 348:
                datatype = struct.unpack(order + 'h', header[70:72])[0]
                dims = struct.unpack(order + '8h', header[40:56])
                offset = int(struct.unpack(order + 'f', header[108:112])[0])
                break
            if header_size == 540:
                datatype = struct.unpack(order + 'h', header[12:14])[0]
                dims = struct.unpack(order + '8q', header[16:80])
                offset = int(struct.unpack(order + 'q', header[168:176])[0])
                break
        else:
            return None
        if datatype not in _NIFTI_FLOAT_TYPES:
            return None

        # The data are stored x fastest, so one slice is a contiguous run.
        slice_size = int(dims[1]) * int(max(dims[2], 1))
        dtype = np.dtype(order + _NIFTI_FLOAT_TYPES[datatype])
        file.seek(offset + slice_index * slice_size * dtype.itemsize)
        data = file.read(slice_size * dtype.itemsize)
    if len(data) != slice_size * dtype.itemsize:
        return None

    values = np.frombuffer(data, dtype)
    return (int(np.count_nonzero(np.isnan(values))),
            int(np.count_nonzero(np.isinf(values))))


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
