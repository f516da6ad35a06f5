"""Read Labelme JSON lesion outlines and turn them into masks and boxes.

Labelme stores one annotation file per 2-D image: a list of shapes in pixel
coordinates, ``x`` along the columns and ``y`` along the rows, plus the
image size and either the image itself (``imageData``, base64) or a path to
it (``imagePath``, relative to the JSON file). Shapes are rasterised with
Labelme's own ``shape_to_mask``.

What each shape type means for the lesion box:

* ``polygon``, ``rectangle``, ``circle`` and ``oriented_rectangle`` outline
  an area, so they outline a lesion. Points outside the image are clipped
  to it, and rectangle corners may come in any order.
* ``line``, ``linestrip``, ``point`` and ``points`` mark no area (Labelme
  would draw them as a thick stroke or a dot of fixed size). They are
  ignored with a note, and a file whose lesion shapes are all of these
  types is an error.
* Other types (such as the ``mask`` shapes of recent Labelme versions) are
  ignored in the same way.
"""
import binascii
import codecs
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Tuple, Union

import numpy as np

PathLike = Union[str, Path]

# (x0, y0, x1, y1) in pixels; x1 and y1 are exclusive.
Box = Tuple[int, int, int, int]

OUTLINE_SHAPE_TYPES = ('polygon', 'rectangle', 'circle', 'oriented_rectangle')

# Encodings tried in order. Labelme writes UTF-8. Older annotation tools on
# Chinese Windows wrote the system code page, GBK, which GB18030 contains.
TEXT_ENCODINGS = ('utf-8-sig', 'gb18030')


class LabelmeError(ValueError):
    """A Labelme file is unreadable or contains no usable lesion outline."""


@dataclass
class LabelmeShape:
    """One shape: its label, Labelme shape type and points (x, y)."""

    label: str
    shape_type: str
    points: np.ndarray


@dataclass
class LabelmeAnnotation:
    """The content of one Labelme file."""

    path: Path
    image_height: Optional[int]
    image_width: Optional[int]
    image_path: Optional[str]
    image_data: Optional[str]
    shapes: List[LabelmeShape] = field(default_factory=list)


def load_labelme(path: PathLike) -> LabelmeAnnotation:
    """Load a Labelme JSON file.

    The file may be UTF-8 with or without a byte-order mark, UTF-16 with a
    byte-order mark, or GBK/GB18030.

    Args:
        path: The ``.json`` file written by Labelme.

    Returns:
        LabelmeAnnotation: image size, image reference and shapes.

    Raises:
        LabelmeError: the file is missing, cannot be decoded, is not JSON,
            lacks ``shapes``, or has an invalid shape or image size.

    Examples:
        >>> import json, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), 'roi.json')
        >>> json.dump({'shapes': [{'label': 'lesion', 'shape_type':
        ...     'rectangle', 'points': [[1, 2], [5, 6]]}], 'imagePath':
        ...     'slice.png', 'imageData': None, 'imageHeight': 8,
        ...     'imageWidth': 8}, open(path, 'w'))
        >>> load_labelme(path).shapes[0].shape_type
        'rectangle'
    """
    path = Path(path)
    if not path.is_file():
        raise LabelmeError(
            f'{path}: Labelme file not found. Check the annotation column of '
            'rois.csv; relative paths start at the cohort folder.')

    text = _decode_text(path.read_bytes(), path)
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise LabelmeError(
            f'{path}: not a valid JSON file ({error}). Re-save it from '
            'Labelme.') from error
    if not isinstance(content, dict) or not isinstance(
            content.get('shapes'), list):
        raise LabelmeError(
            f'{path}: no "shapes" list; this is not a Labelme annotation.')

    shapes = [_parse_shape(raw, path, number)
              for number, raw in enumerate(content['shapes'])]
    return LabelmeAnnotation(
        path=path,
        image_height=_image_size(content, 'imageHeight', path),
        image_width=_image_size(content, 'imageWidth', path),
        image_path=content.get('imagePath') or None,
        image_data=content.get('imageData') or None,
        shapes=shapes)


def shape_mask(shape: LabelmeShape, height: int, width: int) -> np.ndarray:
    """Rasterise one shape into a boolean ``(height, width)`` mask.

    Points outside the image are clipped to it.
    """
    # Imported here: Labelme's package pulls in heavy optional modules.
    from labelme.utils import shape_to_mask

    try:
        return shape_to_mask((height, width), shape.points.tolist(),
                             shape.shape_type)
    except AssertionError as error:
        raise LabelmeError(
            f'{shape.shape_type} shape labelled {shape.label!r} has '
            f'{len(shape.points)} points, which Labelme cannot draw '
            f'({error}).') from error


def labelme_image_path(annotation: LabelmeAnnotation,
                       root: Optional[PathLike] = None) -> Optional[Path]:
    """Resolve the file that a Labelme ``imagePath`` names.

    ``imagePath`` is relative to the JSON file's folder, and Windows
    separators (``..\\images\\a.png``) are accepted.

    Args:
        annotation: A loaded Labelme file.
        root: The cohort folder. When given, an ``imagePath`` that leads
            outside it is rejected, so that an annotation file cannot make
            the tool read other files.

    Returns:
        Path or None: the image file as an absolute path (not checked for
        existence), or ``None`` when ``imagePath`` is not set.

    Raises:
        LabelmeError: ``imagePath`` is a Windows absolute path, or leads
            outside ``root``.

    Examples:
        >>> from pathlib import Path
        >>> annotation = LabelmeAnnotation(Path('c/labels/a.json'), 8, 8,
        ...                                '..\\\\images\\\\a.png', None)
        >>> labelme_image_path(annotation, root='c').parts[-3:]
        ('c', 'images', 'a.png')
    """
    raw = annotation.image_path
    if not raw:
        return None
    if re.match(r'^([A-Za-z]:[\\/]|\\\\)', raw):
        raise LabelmeError(
            f'{annotation.path}: imagePath {raw!r} is an absolute Windows '
            'path, which is not portable. Keep the image in the cohort '
            'folder and save the outline again in Labelme, which then '
            'writes a path relative to the JSON file, or give the slice in '
            'the image column of rois.csv.')

    # normpath folds the '..' steps without following symbolic links, so a
    # cohort folder that links to images stored elsewhere keeps working.
    image_path = Path(os.path.normpath(
        annotation.path.parent.absolute() / raw.replace('\\', '/')))
    if root is not None:
        cohort = Path(os.path.normpath(Path(root).absolute()))
        if cohort != image_path and cohort not in image_path.parents:
            raise LabelmeError(
                f'{annotation.path}: imagePath {raw!r} leads outside the '
                f'cohort folder {cohort} (to {image_path}). A Labelme file '
                'may only refer to an image inside the cohort folder. Move '
                'the image into the cohort folder and fix imagePath, or give '
                'the slice in the image column of rois.csv.')
    return image_path


def labelme_image(annotation: LabelmeAnnotation,
                  root: Optional[PathLike] = None) -> np.ndarray:
    """Return the image a Labelme file refers to, as a 2-D array.

    ``imageData`` (the image embedded as base64) is used when present,
    otherwise ``imagePath`` relative to the JSON file's folder.

    Args:
        annotation: A loaded Labelme file.
        root: The cohort folder; an ``imagePath`` outside it is rejected
            (see :func:`labelme_image_path`).

    Returns:
        np.ndarray: the grayscale image, ``(rows, columns)``.

    Raises:
        LabelmeError: neither is set, ``imageData`` is not an image, the
            ``imagePath`` file is missing or outside ``root``, or the image
            is in colour.

    Examples:
        >>> labelme_image(load_labelme('roi.json'), root='.')  # doctest: +SKIP
    """
    from labelme.utils import img_b64_to_arr

    if annotation.image_data:
        try:
            array = img_b64_to_arr(annotation.image_data)
        except (binascii.Error, OSError, ValueError) as error:
            raise LabelmeError(
                f'{annotation.path}: imageData is not a base64-encoded image '
                f'({error}). Re-save the file from Labelme, or set imageData '
                'to null and give the slice in imagePath or rois.csv.'
            ) from error
    elif annotation.image_path:
        image_path = labelme_image_path(annotation, root)
        if not image_path.is_file():
            raise LabelmeError(
                f'{annotation.path}: imagePath {annotation.image_path!r} '
                f'does not exist ({image_path}). Fix imagePath or give the '
                'slice in the image column of rois.csv.')
        import PIL.Image
        array = np.asarray(PIL.Image.open(image_path))
    else:
        raise LabelmeError(
            f'{annotation.path}: neither imageData nor imagePath is set, and '
            'rois.csv gives no image or dicom for this ROI.')

    if array.ndim == 3:
        # Grayscale may be stored as RGB(A) or gray plus alpha, but colour
        # is rejected.
        color = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
        if np.any(color != color[..., :1]):
            raise LabelmeError(
                f'{annotation.path}: the image is in colour (its R, G and B '
                'channels differ). MR slices are grayscale; give the slice '
                'in the image or dicom column of rois.csv.')
        array = color[..., 0]
    return array


def lesion_box(annotation: LabelmeAnnotation,
               height: int,
               width: int,
               lesion_labels: Optional[Iterable[str]] = None,
               mode: str = 'largest',
               margin: float = 0.0,
               notes: Optional[List[str]] = None) -> Box:
    """Compute the crop box around the outlined lesion.

    Only shapes with a lesion label count. Of those, polygons, rectangles,
    circles and oriented rectangles outline the lesion. Lines, points and
    outlines of zero area inside the slice are ignored, each with a note.

    Args:
        annotation: A loaded Labelme file.
        height: Number of rows of the slice the outlines were drawn on.
        width: Number of columns of that slice.
        lesion_labels: Shape labels that count as lesion outlines, compared
            after stripping spaces and ignoring case; ``None`` takes every
            label.
        mode: ``'largest'`` boxes the shape of largest pixel area, as the
            crop around the main lesion region; ``'union'`` boxes all of
            the lesion shapes together.
        margin: Extra border on each side as a fraction of the box's width
            and height (0.1 adds 10% per side), clipped to the slice.
        notes: When given, a sentence for each ignored lesion shape is
            appended to it.

    Returns:
        tuple: ``(x0, y0, x1, y1)`` in pixels, ``x1`` and ``y1`` exclusive.

    Raises:
        LabelmeError: no shape has a lesion label, no lesion shape outlines
            an area, or every lesion outline has zero area inside the slice.

    Examples:
        >>> shape = LabelmeShape('lesion', 'rectangle',
        ...                      np.array([[2.0, 3.0], [5.0, 7.0]]))
        >>> annotation = LabelmeAnnotation(Path('a.json'), 16, 16, None, None,
        ...                                [shape])
        >>> lesion_box(annotation, 16, 16)
        (2, 3, 6, 8)
    """
    if mode not in ('largest', 'union'):
        raise ValueError(f"mode={mode!r}; use 'largest' or 'union'.")
    if margin < 0:
        raise ValueError(f'margin={margin}; use a fraction >= 0.')
    notes = [] if notes is None else notes

    # Shapes with a lesion label.
    if lesion_labels is not None:
        lesion_labels = [str(label) for label in lesion_labels]
    lesion_keys = None if lesion_labels is None else {
        _label_key(label) for label in lesion_labels}
    if lesion_keys is not None and not lesion_keys:
        raise ValueError('lesion_labels is empty; give one or more labels, '
                         'or None to take every label.')
    labelled = [(number, shape)
                for number, shape in enumerate(annotation.shapes)
                if lesion_keys is None
                or _label_key(shape.label) in lesion_keys]
    if not labelled:
        found = sorted({shape.label for shape in annotation.shapes})
        if not found:
            raise LabelmeError(
                f'{annotation.path}: no lesion outline: the file has no '
                'shapes. Outline the lesion in Labelme.')
        raise LabelmeError(
            f'{annotation.path}: no lesion outline: no shape has a lesion '
            f'label {sorted(lesion_labels)}; labels found: {found}. Outline '
            'the lesion, or name its label with --lesion-labels '
            '(PreprocessConfig.lesion_labels).')

    # Of those, the shapes that outline an area.
    outlines = []
    for number, shape in labelled:
        if shape.shape_type in OUTLINE_SHAPE_TYPES:
            outlines.append((number, shape))
        else:
            notes.append(
                f'{annotation.path.name}: shapes[{number}] '
                f'({shape.shape_type}, label {shape.label!r}) outlines no '
                'area; ignored.')
    if not outlines:
        types = sorted({shape.shape_type for _, shape in labelled})
        raise LabelmeError(
            f'{annotation.path}: no lesion outline: the lesion shapes are '
            f'of type {types}, which outline no area. Outline the lesion '
            'with a polygon, rectangle or circle.')

    # Outlines of zero area inside the slice are ignored.
    masks = [shape_mask(shape, height, width) for _, shape in outlines]
    # Labelme draws a degenerate outline (collinear polygon points, a
    # rectangle of zero width) as a line of pixels, but it encloses nothing.
    areas = [0 if _is_degenerate(shape) else int(mask.sum())
             for (_, shape), mask in zip(outlines, masks)]
    if max(areas) == 0:
        raise LabelmeError(
            f'{annotation.path}: every lesion outline has zero area inside '
            f'the {width}x{height} slice (width x height). Redraw the '
            'outline on this slice.')
    for (number, shape), area in zip(outlines, areas):
        if area == 0:
            notes.append(
                f'{annotation.path.name}: shapes[{number}] '
                f'({shape.shape_type}, label {shape.label!r}) has zero area '
                f'inside the {width}x{height} slice; ignored.')

    # The box of the largest outline or of all of them.
    if mode == 'largest':
        region = masks[int(np.argmax(areas))]
    else:
        region = np.logical_or.reduce(
            [mask for mask, area in zip(masks, areas) if area > 0])
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return expand_box(box, margin, height, width)


def expand_box(box: Box, margin: float, height: int, width: int) -> Box:
    """Grow a box by ``margin`` of its size on each side, within the slice."""
    x0, y0, x1, y1 = box
    pad_x = int(round((x1 - x0) * margin))
    pad_y = int(round((y1 - y0) * margin))
    return (max(0, x0 - pad_x), max(0, y0 - pad_y), min(width, x1 + pad_x),
            min(height, y1 + pad_y))


def check_image_size(annotation: LabelmeAnnotation, height: int,
                     width: int) -> None:
    """Raise when the Labelme image size differs from the slice's size.

    A size the file does not state (``imageHeight`` or ``imageWidth`` is
    null) is not compared.

    Raises:
        LabelmeError: ``imageHeight`` or ``imageWidth`` differs from the
            slice's number of rows or columns.

    Examples:
        >>> annotation = LabelmeAnnotation(Path('a.json'), 48, 32, None, None)
        >>> check_image_size(annotation, 48, 32)
    """
    stated_height = annotation.image_height
    stated_width = annotation.image_width
    if (stated_height in (None, height)) and (stated_width in (None, width)):
        return
    raise LabelmeError(
        f'{annotation.path}: imageHeight x imageWidth is '
        f'{stated_height}x{stated_width} but the slice is {height}x{width} '
        '(rows x columns). The outline was drawn on another image or on a '
        'resized copy. Check imagePath and the image, dicom and slice_index '
        'of this ROI in rois.csv, or open the slice in Labelme and draw the '
        'outline again.')


def _decode_text(data: bytes, path: Path) -> str:
    """Decode a text file as UTF-16 (with a BOM), UTF-8 or GB18030."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode('utf-16')
        except UnicodeDecodeError:
            pass
    # NOTE: GB18030 accepts most byte sequences, so a file in another
    # legacy code page (such as Windows-1252) decodes without an error and
    # its non-ASCII labels come out garbled.
    for encoding in TEXT_ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise LabelmeError(
        f'{path}: the file is neither UTF-8 nor GBK/GB18030 text. Open it '
        'in Labelme or a text editor and save it as UTF-8.')


def _parse_shape(raw: dict, path: Path, number: int) -> LabelmeShape:
    try:
        points = np.asarray(raw['points'], dtype=np.float64).reshape(-1, 2)
        shape_type = raw.get('shape_type') or 'polygon'
        label = str(raw.get('label') or '')
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise LabelmeError(
            f'{path}: shapes[{number}] has no valid "points" list of [x, y] '
            'pairs.') from error
    if not np.isfinite(points).all():
        raise LabelmeError(
            f'{path}: shapes[{number}] (label {label!r}) has a point that is '
            'not a finite number. Redraw the shape.')
    return LabelmeShape(label=label, shape_type=str(shape_type),
                        points=points)


def _image_size(content: dict, key: str, path: Path) -> Optional[int]:
    value = content.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float('nan')
    if not number.is_integer() or number <= 0:
        raise LabelmeError(
            f'{path}: {key}={value!r} is not a positive whole number of '
            f'pixels. Set it to the image size, or to null.')
    return int(number)


def _label_key(label: str) -> str:
    return str(label).strip().casefold()


def _is_degenerate(shape: LabelmeShape) -> bool:
    """Tell whether a shape's outline encloses zero area."""
    points = shape.points
    if shape.shape_type == 'circle':
        return bool(np.allclose(points[0], points[1]))
    if shape.shape_type == 'rectangle':
        width, height = np.abs(points[1] - points[0])
        return bool(width == 0 or height == 0)
    # A polygon encloses area unless all of its points lie on one line.
    return int(np.linalg.matrix_rank(points - points[0])) < 2
