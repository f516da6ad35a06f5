"""Read one 2-D MR slice as a SimpleITK image, keeping its spacing.

A slice comes from a 2-D file (NIfTI, MHA, NRRD, PNG, JPEG), from one slice
of a 3-D file, or from a DICOM folder read as a series. The result is always
a 2-D, single-component, float32 ``SimpleITK.Image`` whose spacing and
origin are those of the source slice.
"""
from pathlib import Path
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk

PathLike = Union[str, Path]

_RASTER_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


class SliceReadError(ValueError):
    """An MR slice could not be read or is not the slice that was asked for."""


def read_slice(path: PathLike,
               slice_index: Optional[int] = None,
               instance_number: Optional[int] = None) -> sitk.Image:
    """Read one 2-D slice from a file or a DICOM folder.

    Args:
        path: A 2-D or 3-D image file readable by SimpleITK, or a folder
            holding one DICOM series.
        slice_index: 0-based index of the slice along the third axis, needed
            when the source contains more than one slice. For a DICOM series
            the slices are ordered by position along the series normal, as
            SimpleITK's series reader orders them.
        instance_number: DICOM InstanceNumber of the slice; an alternative
            to ``slice_index`` for DICOM folders.

    Returns:
        SimpleITK.Image: a 2-D float32 image with the source's spacing.

    Raises:
        SliceReadError: the file is missing or unreadable, the series contains
            several slices and none was chosen, or the chosen one is absent.

    Examples:
        >>> import numpy as np, SimpleITK as sitk, tempfile, os
        >>> image = sitk.GetImageFromArray(np.ones((4, 6), np.uint16))
        >>> image.SetSpacing((0.5, 0.75))
        >>> path = os.path.join(tempfile.mkdtemp(), 'slice.nii.gz')
        >>> sitk.WriteImage(image, path)
        >>> read_slice(path).GetSpacing()
        (0.5, 0.75)
    """
    path = Path(path)
    if not path.exists():
        raise SliceReadError(
            f'{path}: no such file or folder. Check the image or dicom '
            'column of rois.csv; relative paths start at the cohort folder.')
    if slice_index is not None and instance_number is not None:
        raise SliceReadError(
            f'{path}: both slice_index={slice_index} and instance_number='
            f'{instance_number} are set; give one of them.')

    if path.is_dir():
        volume = _read_dicom_series(path, instance_number)
        if instance_number is not None:
            return _to_2d_float(volume, path)
    else:
        if instance_number is not None:
            raise SliceReadError(
                f'{path}: instance_number applies to DICOM folders only; '
                'use slice_index for a 3-D file.')
        volume = _read_file(path)

    return _select_slice(volume, slice_index, path)


def _read_file(path: Path) -> sitk.Image:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise SliceReadError(
            f'{path}: SimpleITK could not read this file ({_first_line(error)}).'
            ' Supported: NIfTI, MHA/MHD, NRRD, PNG, JPEG, TIFF, DICOM.'
        ) from error
    if path.suffix.lower() in _RASTER_SUFFIXES:
        image = _raster_to_gray(image, path)
    return image


def _read_dicom_series(folder: Path,
                       instance_number: Optional[int]) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise SliceReadError(
            f'{folder}: no DICOM series found in this folder. Point the dicom '
            'column at the folder that contains the .dcm files of one series.')
    if len(series_ids) > 1:
        raise SliceReadError(
            f'{folder}: {len(series_ids)} DICOM series in one folder. Keep '
            'one series (the sagittal T2 slices) per folder.')

    file_names = reader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    if instance_number is not None:
        file_names = [
            name for name in file_names
            if _instance_number(name) == instance_number
        ]
        if not file_names:
            raise SliceReadError(
                f'{folder}: no slice with InstanceNumber {instance_number}. '
                'Check the instance_number column of rois.csv.')
        return sitk.ReadImage(file_names[0])

    reader.SetFileNames(file_names)
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise SliceReadError(
            f'{folder}: SimpleITK could not read the DICOM series '
            f'({_first_line(error)}).') from error


def _instance_number(file_name: str) -> Optional[int]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    reader.ReadImageInformation()
    if not reader.HasMetaDataKey('0020|0013'):
        return None
    return int(reader.GetMetaData('0020|0013').strip())


def _select_slice(volume: sitk.Image, slice_index: Optional[int],
                  path: Path) -> sitk.Image:
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
            f'{path}: slice_index={slice_index} is outside 0..{depth - 1}.')
    return _to_2d_float(volume[:, :, slice_index], path)


def _to_2d_float(image: sitk.Image, path: Path) -> sitk.Image:
    if image.GetDimension() == 3:
        if image.GetSize()[2] != 1:
            raise SliceReadError(f'{path}: expected one slice, found '
                                 f'{image.GetSize()[2]}.')
        image = image[:, :, 0]
    if image.GetNumberOfComponentsPerPixel() != 1:
        image = _raster_to_gray(image, path)
    return sitk.Cast(image, sitk.sitkFloat32)


def _raster_to_gray(image: sitk.Image, path: Path) -> sitk.Image:
    """Reduce an RGB(A) raster to one channel; grayscale stored as RGB only."""
    components = image.GetNumberOfComponentsPerPixel()
    if components == 1:
        return image
    array = sitk.GetArrayFromImage(image)
    color = array[..., :3]
    if not (np.array_equal(color[..., 0], color[..., 1])
            and np.array_equal(color[..., 0], color[..., 2])):
        raise SliceReadError(
            f'{path}: a colour image (its R, G and B channels differ). MR '
            'slices are grayscale; export the slice without colour overlays.')
    gray = sitk.GetImageFromArray(np.ascontiguousarray(color[..., 0]))
    gray.CopyInformation(
        sitk.VectorIndexSelectionCast(image, 0))
    return gray


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
