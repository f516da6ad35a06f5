"""Preprocess a new patient's slice as the model's training crops were.

The steps follow :func:`stbsm_mm.preprocessing.prepare_cohort` for one
slice, with the parameters recorded when the model's data were prepared:
read the slice with its pixel spacing, correct the bias field (N4),
normalise the intensities, box each ROI (a Labelme outline or a rectangle)
with the crop margin, and cut the crop, resampled to square pixels. The
functions that do each step are the ones ``prepare_cohort`` calls.
"""
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..io.image import DEFAULT_MAX_PIXELS, read_slice
from ..io.labelme import (Box, LabelmeAnnotation, LabelmeError,
                          check_image_size, expand_box, lesion_box,
                          load_labelme)
from ..preprocessing.crop import crop_lesion
from ..preprocessing.prepare import PreprocessConfig, preprocess_slice
from ..utils.fileio import sha256_of_file
from .errors import InferenceError

PathLike = Union[str, Path]

# File formats that store no pixel spacing; SimpleITK reads them as 1 mm.
RASTER_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')

# Parameters that do not change the crops: the column of rois.csv that
# supplied the slices, and the size limit of a source file.
COHORT_ONLY_PARAMETERS = ('source', 'max_pixels')

# Parameters that records of older stbsm-mm versions lack, with the value
# those versions used (correct_bias_field's convergence threshold was 1e-6
# before it became a parameter).
LEGACY_VALUES = {'n4_convergence': 1e-6, 'max_pixels': DEFAULT_MAX_PIXELS}

# Relative difference above which a --spacing value contradicts the header.
SPACING_TOLERANCE = 1e-3


@dataclass
class RoiInput:
    """One ROI to classify: a Labelme outline or a rectangle.

    Args:
        name: ROI name used in the outputs (the Labelme file's stem, or
            ``box<k>``).
        annotation: The Labelme file, when the ROI is an outline.
        box: ``(x0, y0, x1, y1)`` in slice pixels, ``x1`` and ``y1``
            exclusive, when the ROI is a rectangle.
        annotation_sha256: Checksum of the Labelme file.
    """

    name: str
    annotation: Optional[LabelmeAnnotation] = None
    box: Optional[Box] = None
    annotation_sha256: Optional[str] = None

    @property
    def kind(self) -> str:
        return 'labelme' if self.annotation is not None else 'box'


@dataclass
class PreparedRoi:
    """A ROI's crop box on the slice and its crop, ready for the network."""

    name: str
    kind: str
    box: Box
    crop: np.ndarray
    crop_spacing: Tuple[float, float]
    annotation_sha256: Optional[str] = None


@dataclass
class PreparedSlice:
    """The normalised slice (uint8, rows x columns) and the crops on it."""

    image: np.ndarray
    spacing: Tuple[float, float]
    spacing_source: str
    rois: List[PreparedRoi] = field(default_factory=list)


def preprocess_config_from_record(params: Mapping,
                                  origin: str) -> PreprocessConfig:
    """Build the preprocessing parameters recorded with a model.

    A parameter that records of older stbsm-mm versions lack gets the value
    those versions used (:data:`LEGACY_VALUES`).

    Args:
        params: The ``preprocessing`` entry of ``manifest.json`` or
            ``train_run.json``.
        origin: The file the entry came from, for error messages.

    Returns:
        PreprocessConfig: The parameters.

    Raises:
        InferenceError: If the entry is not a mapping, lacks a parameter or
            names an unknown one (a record of another stbsm-mm version).

    Examples:
        >>> from stbsm_mm.preprocessing import PreprocessConfig
        >>> record = PreprocessConfig(margin=0.1).to_dict()
        >>> preprocess_config_from_record(record, 'manifest.json').margin
        0.1
    """
    if not isinstance(params, Mapping):
        raise InferenceError(
            f'{origin}: the preprocessing entry is {params!r}, not a mapping '
            'of parameters. Prepare the data with tools/prepare_data.py and '
            'train again.')
    names = {item.name for item in dataclasses.fields(PreprocessConfig)}
    values = dict(params)
    for name, value in LEGACY_VALUES.items():
        if name in names:
            values.setdefault(name, value)
    missing = sorted(names - set(values))
    unknown = sorted(set(values) - names)
    if missing or unknown:
        raise InferenceError(
            f'{origin}: the recorded preprocessing lacks {missing} and has '
            f'unknown parameters {unknown}; it was written by another '
            'stbsm-mm version. Use the stbsm-mm version that prepared the '
            'data, or prepare and train again.')

    if values['n4_iterations'] is not None:
        values['n4_iterations'] = tuple(values['n4_iterations'])
    if values['lesion_labels'] is not None:
        values['lesion_labels'] = tuple(values['lesion_labels'])
    try:
        return PreprocessConfig(**values)
    except (TypeError, ValueError) as error:
        raise InferenceError(
            f'{origin}: invalid recorded preprocessing ({error}).') from error


def check_same_preprocessing(
        configs: Sequence[Tuple[str, PreprocessConfig]]) -> PreprocessConfig:
    """Return the preprocessing that every model shares.

    One slice is preprocessed once for all models, so the models must have
    been trained on crops prepared with the same parameters. ``source``
    (which column of ``rois.csv`` supplied the slices) is not compared.

    Args:
        configs: ``(model name, parameters)`` of each model.

    Returns:
        PreprocessConfig: The shared parameters.

    Raises:
        InferenceError: If two models differ; the message lists the
            parameters that differ and their values.

    Examples:
        >>> from stbsm_mm.preprocessing import PreprocessConfig
        >>> check_same_preprocessing([('a', PreprocessConfig()),
        ...                           ('b', PreprocessConfig())]).n4
        True
    """
    if not configs:
        raise InferenceError('No model given; pass --model WORK_DIR_OR_CKPT.')
    first_name, first = configs[0]
    reference = _comparable(first)
    for name, config in configs[1:]:
        other = _comparable(config)
        differences = [
            f'{key}: {reference[key]!r} ({first_name}) vs {other[key]!r} '
            f'({name})' for key in reference if reference[key] != other[key]
        ]
        if differences:
            raise InferenceError(
                'The models were trained on crops prepared with different '
                'preprocessing, so one slice cannot be prepared for both: '
                + '; '.join(differences) + '. Run stbsm-infer once per '
                'preprocessing.')
    return first


def _comparable(config: PreprocessConfig) -> dict:
    params = config.to_dict()
    for name in COHORT_ONLY_PARAMETERS:
        params.pop(name, None)
    return params


def parse_box(text: str) -> Box:
    """Parse ``--box x0,y0,x1,y1`` (pixels, ``x1`` and ``y1`` exclusive).

    Examples:
        >>> parse_box('10,20,50,60')
        (10, 20, 50, 60)
    """
    parts = [part.strip() for part in str(text).split(',')]
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise InferenceError(
            f'--box {text!r} is not four integers; pass x0,y0,x1,y1 in '
            'pixels of the slice, e.g. --box 120,340,220,420.')
    x0, y0, x1, y1 = values
    if x0 >= x1 or y0 >= y1 or x0 < 0 or y0 < 0:
        raise InferenceError(
            f'--box {text!r} is empty or negative; pass x0 < x1 and y0 < y1, '
            'all at least 0 (x1 and y1 are exclusive).')
    return (x0, y0, x1, y1)


def parse_spacing(text: str) -> Tuple[float, float]:
    """Parse ``--spacing ROW,COL`` in mm into SimpleITK order (col, row).

    ``ROW`` is the distance between rows and ``COL`` the distance between
    columns, in the order of the DICOM PixelSpacing attribute.

    Examples:
        >>> parse_spacing('0.5,0.8')
        (0.8, 0.5)
    """
    parts = str(text).split(',')
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 2 or not all(
            np.isfinite(value) and value > 0 for value in values):
        raise InferenceError(
            f'--spacing {text!r} is not two positive numbers; pass ROW,COL '
            'in mm, as in the DICOM PixelSpacing attribute, e.g. '
            '--spacing 0.39,0.63.')
    row, col = values
    return (col, row)


def load_roi_inputs(annotations: Sequence[PathLike],
                    boxes: Sequence[Box]) -> List[RoiInput]:
    """Load the Labelme files and rectangles to classify, with unique names.

    Args:
        annotations: Labelme ``.json`` files, one ROI each.
        boxes: Rectangles from :func:`parse_box`.

    Returns:
        list[RoiInput]: The Labelme ROIs in the given order, then the boxes.

    Raises:
        InferenceError: If neither is given.
        LabelmeError: If a Labelme file is missing or invalid.
    """
    if not annotations and not boxes:
        raise InferenceError(
            'No ROI given; pass one or more Labelme files with --roi FILE or '
            'a rectangle with --box x0,y0,x1,y1.')
    rois: List[RoiInput] = []
    used = set()
    for path in annotations:
        annotation = load_labelme(path)
        name = _unique_name(_safe_name(Path(path).stem), used)
        rois.append(RoiInput(name=name, annotation=annotation,
                             annotation_sha256=sha256_of_file(path)))
    for number, box in enumerate(boxes, start=1):
        rois.append(RoiInput(name=_unique_name(f'box{number}', used),
                             box=tuple(box)))
    return rois


def _safe_name(text: str) -> str:
    return re.sub(r'[^0-9A-Za-z._-]', '_', text).strip('.') or 'roi'


def _unique_name(name: str, used: set) -> str:
    candidate = name
    number = 2
    while candidate.lower() in used:
        candidate = f'{name}_{number}'
        number += 1
    used.add(candidate.lower())
    return candidate


def read_patient_slice(path: PathLike,
                       config: PreprocessConfig,
                       slice_index: Optional[int] = None,
                       instance_number: Optional[int] = None,
                       spacing: Optional[Tuple[float, float]] = None
                       ) -> Tuple[sitk.Image, str]:
    """Read the slice and give it the pixel spacing the model expects.

    Args:
        path: A DICOM folder, or a NIfTI, MHA, NRRD or raster (PNG, JPEG,
            TIFF) file.
        config: The model's preprocessing.
        slice_index: 0-based slice of a volume.
        instance_number: DICOM InstanceNumber of the slice.
        spacing: ``(col, row)`` spacing in mm from :func:`parse_spacing`.
            Needed for raster files when the preprocessing depends on the
            spacing (N4 or square-pixel crops). For files with a spacing in
            their header it must agree with the header.

    Returns:
        tuple: the float32 slice and where its spacing came from
        (``'header'`` or ``'--spacing'``).

    Raises:
        SliceReadError: If the slice cannot be read.
        InferenceError: If the spacing is missing or contradicts the header.
    """
    image = read_slice(path, slice_index, instance_number,
                       max_pixels=config.max_pixels)
    is_raster = Path(path).is_file() and Path(
        path).suffix.lower() in RASTER_SUFFIXES

    if is_raster:
        if spacing is None:
            if config.n4 or config.square_pixels:
                raise InferenceError(
                    f'{path}: a {Path(path).suffix} file stores no pixel '
                    'spacing, but the model was trained on slices whose N4 '
                    'correction and square-pixel crops used the spacing. '
                    'Pass --spacing ROW,COL in mm (from the DICOM '
                    'PixelSpacing of the series), or --spacing 1,1 if the '
                    'training slices were raster files too.')
            return image, 'none'
        image.SetSpacing(spacing)
        return image, '--spacing'

    if spacing is not None:
        header = image.GetSpacing()
        if any(abs(given - stored) > SPACING_TOLERANCE * stored
               for given, stored in zip(spacing, header)):
            raise InferenceError(
                f'{path}: --spacing {spacing[1]},{spacing[0]} (ROW,COL) '
                f'differs from the spacing in the file header, '
                f'{header[1]:.6g},{header[0]:.6g} mm. Leave --spacing out '
                'for files that store their spacing.')
    return image, 'header'


def check_drawn_on_slice(annotation: LabelmeAnnotation, height: int,
                         width: int) -> None:
    """Reject a Labelme file whose image size differs from the slice's.

    The size check is the one ``tools/prepare_data.py`` runs, with a
    message that names the options of ``stbsm-infer`` instead of
    ``rois.csv``.

    Raises:
        InferenceError: ``imageHeight`` or ``imageWidth`` differs from the
            slice's number of rows or columns.
    """
    try:
        check_image_size(annotation, height, width)
    except LabelmeError as error:
        raise InferenceError(
            f'{annotation.path}: imageHeight x imageWidth is '
            f'{annotation.image_height}x{annotation.image_width} but the '
            f'slice is {height}x{width} (rows x columns), so the outline was '
            'drawn on another image or on a resized copy. Check that the '
            'Labelme file was drawn on this slice, and for a volume or a '
            'multi-slice series that --slice-index or --instance-number '
            'selects that slice.') from error


def roi_box(roi: RoiInput, config: PreprocessConfig, height: int,
            width: int) -> Box:
    """Return the crop box of a ROI on a ``height`` x ``width`` slice.

    A Labelme outline is boxed with the recorded label filter, crop mode
    and margin. A rectangle gets the same margin.
    """
    if roi.annotation is not None:
        check_drawn_on_slice(roi.annotation, height, width)
        return lesion_box(roi.annotation, height, width,
                          config.lesion_labels, config.crop_mode,
                          config.margin)

    x0, y0, x1, y1 = roi.box
    if x1 > width or y1 > height:
        raise InferenceError(
            f'--box {x0},{y0},{x1},{y1} ({roi.name}) lies outside the '
            f'{width}x{height} slice (columns x rows); pass pixel '
            f'coordinates with x1 <= {width} and y1 <= {height}.')
    return expand_box(roi.box, config.margin, height, width)


def prepare_patient_slice(path: PathLike,
                          rois: Sequence[RoiInput],
                          config: PreprocessConfig,
                          slice_index: Optional[int] = None,
                          instance_number: Optional[int] = None,
                          spacing: Optional[Tuple[float, float]] = None
                          ) -> PreparedSlice:
    """Read, correct, normalise and crop one slice for the given ROIs.

    Args:
        path: The slice source (see :func:`read_patient_slice`).
        rois: ROIs from :func:`load_roi_inputs`.
        config: The model's preprocessing.
        slice_index: 0-based slice of a volume.
        instance_number: DICOM InstanceNumber of the slice.
        spacing: ``(col, row)`` spacing in mm for raster files.

    Returns:
        PreparedSlice: the normalised slice and one crop per ROI.

    Examples:
        >>> rois = load_roi_inputs([], [(10, 10, 40, 40)])  # doctest: +SKIP
        >>> prepared = prepare_patient_slice(
        ...     'slice.nii.gz', rois, PreprocessConfig())  # doctest: +SKIP
        >>> prepared.rois[0].crop.dtype  # doctest: +SKIP
        dtype('uint8')
    """
    # Read the slice.
    image, spacing_source = read_patient_slice(path, config, slice_index,
                                               instance_number, spacing)
    width, height = image.GetSize()

    # Box every ROI before the slow N4 step, so that bad ROIs fail fast.
    boxes = [roi_box(roi, config, height, width) for roi in rois]

    # Correct the bias field and normalise the intensities.
    normalised, _ = preprocess_slice(image, config)

    # Crop each ROI.
    prepared = PreparedSlice(
        image=sitk.GetArrayFromImage(normalised),
        spacing=tuple(float(value) for value in normalised.GetSpacing()),
        spacing_source=spacing_source)
    for roi, box in zip(rois, boxes):
        crop = crop_lesion(normalised, box, config.square_pixels)
        prepared.rois.append(
            PreparedRoi(
                name=roi.name,
                kind=roi.kind,
                box=tuple(int(value) for value in box),
                crop=sitk.GetArrayFromImage(crop),
                crop_spacing=tuple(float(value)
                                   for value in crop.GetSpacing()),
                annotation_sha256=roi.annotation_sha256))
    return prepared
