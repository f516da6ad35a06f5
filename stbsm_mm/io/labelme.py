"""Read Labelme JSON lesion outlines and turn them into masks and boxes.

Labelme stores one annotation file per 2-D image: a list of shapes (polygon,
rectangle, circle, line, point) in pixel coordinates, ``x`` along the columns
and ``y`` along the rows, plus the image size and either the image itself
(``imageData``, base64) or a path to it (``imagePath``, relative to the JSON
file). Shapes are rasterised with Labelme's own ``shape_to_mask``.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, Path]

# (x0, y0, x1, y1) in pixels; x1 and y1 are exclusive.
Box = Tuple[int, int, int, int]

SUPPORTED_SHAPE_TYPES = ('polygon', 'rectangle', 'circle')


class LabelmeError(ValueError):
    """A Labelme file is unreadable or contains no usable lesion outline."""


@dataclass
class LabelmeShape:
    """One outlined shape: its label, Labelme shape type and points (x, y)."""

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

    Args:
        path: The ``.json`` file written by Labelme.

    Returns:
        LabelmeAnnotation: image size, image reference and shapes.

    Raises:
        LabelmeError: the file is missing, is not JSON, or lacks ``shapes``.

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
    try:
        content = json.loads(path.read_text(encoding='utf-8-sig'))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LabelmeError(
            f'{path}: not a valid UTF-8 JSON file ({error}). Re-save it from '
            'Labelme.') from error
    if not isinstance(content, dict) or not isinstance(
            content.get('shapes'), list):
        raise LabelmeError(
            f'{path}: no "shapes" list; this is not a Labelme annotation.')

    shapes = [_parse_shape(raw, path, number)
              for number, raw in enumerate(content['shapes'])]
    return LabelmeAnnotation(
        path=path,
        image_height=_optional_int(content.get('imageHeight')),
        image_width=_optional_int(content.get('imageWidth')),
        image_path=content.get('imagePath'),
        image_data=content.get('imageData'),
        shapes=shapes)


def shape_mask(shape: LabelmeShape, height: int, width: int) -> np.ndarray:
    """Rasterise one shape into a boolean ``(height, width)`` mask."""
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


def labelme_image(annotation: LabelmeAnnotation) -> np.ndarray:
    """Return the image a Labelme file refers to, as a 2-D array.

    ``imageData`` (the image embedded as base64) is used when present,
    otherwise ``imagePath`` relative to the JSON file's folder.

    Raises:
        LabelmeError: neither is set, the ``imagePath`` file is missing, or
            the image is in colour.
    """
    from labelme.utils import img_b64_to_arr

    if annotation.image_data:
        array = img_b64_to_arr(annotation.image_data)
    elif annotation.image_path:
        image_path = annotation.path.parent / annotation.image_path.replace(
            '\\', '/')
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
               margin: float = 0.0) -> Box:
    """Compute the crop box around the outlined lesion.

    Args:
        annotation: A loaded Labelme file.
        height: Number of rows of the slice the outlines were drawn on.
        width: Number of columns of that slice.
        lesion_labels: Shape labels that count as lesion outlines; ``None``
            takes every polygon, rectangle and circle.
        mode: ``'largest'`` boxes the shape of largest pixel area, as the
            crop around the main lesion region; ``'union'`` boxes all of
            the lesion shapes together.
        margin: Extra border on each side as a fraction of the box's width
            and height (0.1 adds 10% per side), clipped to the slice.

    Returns:
        tuple: ``(x0, y0, x1, y1)`` in pixels, ``x1`` and ``y1`` exclusive.

    Raises:
        LabelmeError: no lesion shape, or every lesion shape has zero area
            inside the slice.
    """
    if mode not in ('largest', 'union'):
        raise ValueError(f"mode={mode!r}; use 'largest' or 'union'.")
    if margin < 0:
        raise ValueError(f'margin={margin}; use a fraction >= 0.')

    wanted = None if lesion_labels is None else set(lesion_labels)
    candidates = [
        shape for shape in annotation.shapes
        if shape.shape_type in SUPPORTED_SHAPE_TYPES and (
            wanted is None or shape.label in wanted)
    ]
    if not candidates:
        labels = sorted({shape.label for shape in annotation.shapes})
        raise LabelmeError(
            f'{annotation.path}: no lesion outline (polygon, rectangle or '
            f'circle) with a label in {sorted(wanted) if wanted else "any"}; '
            f'labels found: {labels}. Outline the lesion or pass its label '
            'with --lesion-labels.')

    masks = [shape_mask(shape, height, width) for shape in candidates]
    # Labelme draws a degenerate outline (collinear polygon points, a
    # rectangle of zero width) as a line of pixels, but it encloses nothing.
    areas = [0 if _is_degenerate(shape) else int(mask.sum())
             for shape, mask in zip(candidates, masks)]
    if max(areas) == 0:
        raise LabelmeError(
            f'{annotation.path}: every lesion outline has zero area inside '
            f'the {width}x{height} slice. Redraw the outline.')
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
    """Raise when the Labelme image size differs from the slice's size."""
    stated = (annotation.image_height, annotation.image_width)
    if None in stated:
        return
    if stated != (height, width):
        raise LabelmeError(
            f'{annotation.path}: imageHeight x imageWidth is '
            f'{stated[0]}x{stated[1]} but the slice is {height}x{width}. '
            'The outline was drawn on another image; check imagePath and '
            'the slice_index of this ROI.')


def _parse_shape(raw: dict, path: Path, number: int) -> LabelmeShape:
    try:
        points = np.asarray(raw['points'], dtype=np.float64).reshape(-1, 2)
        shape_type = raw.get('shape_type') or 'polygon'
        label = str(raw.get('label', ''))
    except (KeyError, TypeError, ValueError) as error:
        raise LabelmeError(
            f'{path}: shape {number} has no valid "points" list of [x, y] '
            'pairs.') from error
    return LabelmeShape(label=label, shape_type=shape_type, points=points)


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


def _optional_int(value) -> Optional[int]:
    return None if value is None else int(value)

