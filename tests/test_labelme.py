"""Tests of the Labelme reader: shapes, lesion boxes and referenced images.

Labelme fills a shape including its outline, so a rectangle drawn from
pixel (x0, y0) to pixel (x1, y1) covers columns x0..x1 and rows y0..y1. The
expected boxes below are those pixel ranges with exclusive ends.
"""
import json

import numpy as np
import PIL.Image
import pytest
from labelme.utils import img_arr_to_b64

from helpers import circle, polygon, rectangle, write_labelme
from stbsm_mm.io import (LabelmeError, check_image_size, expand_box,
                         labelme_image, lesion_box, load_labelme)

SIZE = 64


def box_of(tmp_path, shapes, **kwargs):
    """Write shapes to a Labelme file and return the lesion box."""
    path = write_labelme(tmp_path / 'roi.json', shapes, SIZE, SIZE)
    return lesion_box(load_labelme(path), SIZE, SIZE, **kwargs)


# Reading files.


def test_load_reads_shapes_and_size(tmp_path):
    path = write_labelme(tmp_path / 'roi.json',
                         [rectangle(1, 2, 5, 6, label='lesion')], 48, 32,
                         image_path='slice.png')

    annotation = load_labelme(path)

    assert (annotation.image_height, annotation.image_width) == (48, 32)
    assert annotation.image_path == 'slice.png'
    assert annotation.image_data is None
    assert len(annotation.shapes) == 1
    assert annotation.shapes[0].label == 'lesion'
    assert annotation.shapes[0].shape_type == 'rectangle'
    np.testing.assert_array_equal(annotation.shapes[0].points,
                                  [[1, 2], [5, 6]])


def test_load_utf8_bom(tmp_path):
    path = write_labelme(tmp_path / 'roi.json',
                         [rectangle(1, 2, 5, 6, label='läsion')], 8, 8,
                         bom=True)
    assert path.read_bytes().startswith(b'\xef\xbb\xbf')

    annotation = load_labelme(path)

    assert annotation.shapes[0].label == 'läsion'


def test_load_missing_file(tmp_path):
    with pytest.raises(LabelmeError, match='not found') as error:
        load_labelme(tmp_path / 'absent.json')
    assert 'absent.json' in str(error.value)


def test_load_invalid_json(tmp_path):
    path = tmp_path / 'roi.json'
    path.write_text('{"shapes": [', encoding='utf-8')

    with pytest.raises(LabelmeError, match='not a valid JSON file'):
        load_labelme(path)


def test_load_without_shapes(tmp_path):
    path = tmp_path / 'roi.json'
    path.write_text(json.dumps({'imagePath': 'slice.png'}), encoding='utf-8')

    with pytest.raises(LabelmeError, match='no "shapes" list'):
        load_labelme(path)


def test_load_missing_shape_type_is_polygon(tmp_path):
    path = tmp_path / 'roi.json'
    path.write_text(json.dumps({'shapes': [{
        'label': 'lesion',
        'points': [[10, 10], [20, 10], [15, 20]]
    }]}), encoding='utf-8')

    annotation = load_labelme(path)

    assert annotation.shapes[0].shape_type == 'polygon'
    assert lesion_box(annotation, SIZE, SIZE) == (10, 10, 21, 21)


# Boxes of single shapes.


def test_box_polygon(tmp_path):
    box = box_of(tmp_path, [polygon([(10, 12), (40, 12), (25, 50)])])

    assert box == (10, 12, 41, 51)


@pytest.mark.parametrize('corners', [
    ((10, 20), (30, 40)),
    ((30, 40), (10, 20)),
    ((10, 40), (30, 20)),
    ((30, 20), (10, 40)),
])
def test_box_rectangle_any_corner_order(tmp_path, corners):
    (x0, y0), (x1, y1) = corners

    box = box_of(tmp_path, [rectangle(x0, y0, x1, y1)])

    assert box == (10, 20, 31, 41)


def test_box_circle(tmp_path):
    # Centre (32, 30), radius 10: the disc spans 22..42 and 20..40.
    box = box_of(tmp_path, [circle((32, 30), (38, 38))])

    assert box == (22, 20, 43, 41)


def test_box_two_point_polygon_raises(tmp_path):
    with pytest.raises(LabelmeError, match='2 points'):
        box_of(tmp_path, [polygon([(10, 10), (20, 20)])])


# Several shapes: largest, union, label filter.


@pytest.fixture
def two_lesions():
    small = rectangle(5, 5, 9, 9)
    large = rectangle(30, 28, 50, 52)
    return [small, large]


def test_box_largest(tmp_path, two_lesions):
    assert box_of(tmp_path, two_lesions, mode='largest') == (30, 28, 51, 53)


def test_box_largest_ignores_shape_order(tmp_path, two_lesions):
    box = box_of(tmp_path, two_lesions[::-1], mode='largest')

    assert box == (30, 28, 51, 53)


def test_box_union(tmp_path, two_lesions):
    assert box_of(tmp_path, two_lesions, mode='union') == (5, 5, 51, 53)


def test_box_invalid_mode(tmp_path, two_lesions):
    with pytest.raises(ValueError, match="mode='biggest'"):
        box_of(tmp_path, two_lesions, mode='biggest')


def test_box_lesion_labels_filter(tmp_path):
    shapes = [rectangle(5, 5, 9, 9, label='lesion'),
              rectangle(20, 20, 60, 60, label='vertebra')]

    box = box_of(tmp_path, shapes, lesion_labels=['lesion'])

    assert box == (5, 5, 10, 10)


def test_box_lesion_labels_not_found(tmp_path):
    shapes = [rectangle(5, 5, 9, 9, label='lesion'),
              rectangle(20, 20, 60, 60, label='vertebra')]

    with pytest.raises(LabelmeError, match='no lesion outline') as error:
        box_of(tmp_path, shapes, lesion_labels=['tumour'])
    message = str(error.value)
    assert "['tumour']" in message
    assert "labels found: ['lesion', 'vertebra']" in message


def test_box_ignores_line_and_point(tmp_path):
    shapes = [
        {'label': 'lesion', 'shape_type': 'line',
         'points': [[1, 1], [60, 60]]},
        {'label': 'lesion', 'shape_type': 'point', 'points': [[3, 50]]},
        rectangle(20, 22, 30, 32),
    ]

    assert box_of(tmp_path, shapes, mode='union') == (20, 22, 31, 33)


# Zero-area outlines.


@pytest.mark.parametrize('shape', [
    polygon([(10, 10), (20, 20), (30, 30)]),
    polygon([(12, 12), (12, 12), (12, 12)]),
    rectangle(5, 5, 5, 30),
    rectangle(5, 8, 30, 8),
    circle((32, 32), (32, 32)),
    rectangle(100, 100, 120, 120),
], ids=['collinear polygon', 'one-point polygon', 'zero-width rectangle',
        'zero-height rectangle', 'zero-radius circle', 'outside slice'])
def test_box_zero_area_raises(tmp_path, shape):
    with pytest.raises(LabelmeError, match='zero area'):
        box_of(tmp_path, [shape])


def test_box_union_skips_zero_area(tmp_path):
    shapes = [polygon([(1, 1), (2, 2), (3, 3)]), rectangle(20, 22, 30, 32)]

    assert box_of(tmp_path, shapes, mode='union') == (20, 22, 31, 33)


# Margin.


def test_box_margin_grows_each_side(tmp_path):
    # 10% of a 20 x 10 box adds 2 columns and 1 row on each side.
    box = box_of(tmp_path, [rectangle(20, 20, 39, 29)], margin=0.1)

    assert box == (18, 19, 42, 31)


def test_box_margin_clipped_to_slice(tmp_path):
    shapes = [rectangle(0, 2, 9, 11), rectangle(54, 54, 63, 63)]

    low = box_of(tmp_path, shapes[:1], margin=0.5)
    high = box_of(tmp_path, shapes[1:], margin=0.5)

    assert low == (0, 0, 15, 17)
    assert high == (49, 49, 64, 64)


def test_box_negative_margin(tmp_path):
    with pytest.raises(ValueError, match='margin=-0.1'):
        box_of(tmp_path, [rectangle(20, 20, 39, 29)], margin=-0.1)


@pytest.mark.parametrize('margin, expected', [
    (0.0, (10, 20, 30, 60)),
    (0.25, (5, 10, 35, 70)),
    (1.0, (0, 0, 50, 80)),
])
def test_expand_box(margin, expected):
    assert expand_box((10, 20, 30, 60), margin, 80, 50) == expected


# Image size.


def test_image_size_match(tmp_path):
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 4, 4)], 48,
                         32)

    check_image_size(load_labelme(path), 48, 32)


def test_image_size_mismatch(tmp_path):
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 4, 4)], 48,
                         32)

    with pytest.raises(LabelmeError) as error:
        check_image_size(load_labelme(path), 64, 40)
    assert '48x32' in str(error.value)
    assert '64x40' in str(error.value)


def test_image_size_unknown_passes(tmp_path):
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 4, 4)],
                         None, None)

    check_image_size(load_labelme(path), 64, 40)


# Referenced images.


def gray_image(height: int = 20, width: int = 24) -> np.ndarray:
    return (np.arange(height * width) * 3 % 256).astype(np.uint8).reshape(
        height, width)


def test_image_embedded(tmp_path):
    gray = gray_image()
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 4, 4)], 20,
                         24, image_path='elsewhere.png',
                         image_data=img_arr_to_b64(gray))

    np.testing.assert_array_equal(labelme_image(load_labelme(path)), gray)


def test_image_embedded_rgb_gray(tmp_path):
    gray = gray_image()
    rgb = np.stack([gray] * 3, axis=-1)
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 4, 4)], 20,
                         24, image_data=img_arr_to_b64(rgb))

    np.testing.assert_array_equal(labelme_image(load_labelme(path)), gray)


def test_image_embedded_colour_raises(tmp_path):
    rgb = np.stack([gray_image()] * 3, axis=-1)
    rgb[5:10, 5:10, 0] = 255
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 4, 4)], 20,
                         24, image_data=img_arr_to_b64(rgb))

    with pytest.raises(LabelmeError, match='colour'):
        labelme_image(load_labelme(path))


def test_image_path_windows_relative(tmp_path):
    gray = gray_image()
    (tmp_path / 'slices').mkdir()
    PIL.Image.fromarray(gray).save(tmp_path / 'slices' / 'a.png')
    path = write_labelme(tmp_path / 'labels' / 'roi.json',
                         [rectangle(1, 1, 4, 4)], 20, 24,
                         image_path='..\\slices\\a.png', image_data=None)

    np.testing.assert_array_equal(labelme_image(load_labelme(path)), gray)


def test_image_path_missing(tmp_path):
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 4, 4)], 20,
                         24, image_path='gone.png')

    with pytest.raises(LabelmeError, match="imagePath 'gone.png'"):
        labelme_image(load_labelme(path))


def test_image_not_referenced(tmp_path):
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 4, 4)], 20,
                         24)

    with pytest.raises(LabelmeError, match='neither imageData nor imagePath'):
        labelme_image(load_labelme(path))
