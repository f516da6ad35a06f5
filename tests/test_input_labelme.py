"""Input checks of Labelme files, alone and through prepare_cohort.

Each case builds its own small Labelme files in ``tmp_path``. The cohort
tests use 64x64 PNG slices that the Labelme files reach through
``imagePath`` (or embed as ``imageData``), with N4 off to stay fast.
"""
import json
from pathlib import Path
from typing import List, Optional

import numpy as np
import PIL.Image
import pytest
from labelme.utils import img_arr_to_b64

from helpers import (circle, disc_phantom, polygon, rectangle, write_image,
                     write_labelme, write_table)
from stbsm_mm.io import (LabelmeError, check_image_size, labelme_image,
                         lesion_box, load_labelme)
from stbsm_mm.io.labelme import labelme_image_path
from stbsm_mm.preprocessing import PreprocessConfig, prepare_cohort

SIZE = 64
FAST = PreprocessConfig(n4=False)


def slice_array(seed: int = 0) -> np.ndarray:
    """A 64x64 uint8 slice: a disc with a brighter block and some noise."""
    array = disc_phantom(SIZE, SIZE, value=120.0)
    array[20:30, 20:34] = 200.0
    noise = np.random.default_rng(seed).integers(0, 20, array.shape)
    return np.clip(array + noise, 0, 255).astype(np.uint8)


def box_of(tmp_path: Path, shapes: List[dict], notes=None, **kwargs):
    path = write_labelme(tmp_path / 'roi.json', shapes, SIZE, SIZE)
    return lesion_box(load_labelme(path), SIZE, SIZE, notes=notes, **kwargs)


def write_labelme_encoded(path: Path, shapes: List[dict], encoding: str,
                          image_path: Optional[str] = None) -> Path:
    """Write a Labelme file in another encoding, non-ASCII kept as is."""
    content = {'version': '3.16.7', 'flags': {}, 'shapes': shapes,
               'imagePath': image_path, 'imageData': None,
               'imageHeight': SIZE, 'imageWidth': SIZE}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(content, ensure_ascii=False).encode(encoding))
    return path


# Embedded and referenced images.


def test_image_data_wins_over_outside_path(tmp_path):
    array = slice_array()
    path = write_labelme(tmp_path / 'cohort' / 'roi.json',
                         [rectangle(1, 1, 9, 9)], SIZE, SIZE,
                         image_path='../../elsewhere.png',
                         image_data=img_arr_to_b64(array))

    image = labelme_image(load_labelme(path), root=tmp_path / 'cohort')

    np.testing.assert_array_equal(image, array)


def test_image_data_invalid_base64(tmp_path):
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 9, 9)],
                         SIZE, SIZE, image_data='bm90IGFuIGltYWdl')

    with pytest.raises(LabelmeError, match='imageData is not a base64') as \
            error:
        labelme_image(load_labelme(path))
    assert 'roi.json' in str(error.value)


def test_image_data_null_reads_path(tmp_path):
    array = slice_array()
    PIL.Image.fromarray(array).save(tmp_path / 'slice.png')
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 9, 9)],
                         SIZE, SIZE, image_path='slice.png', image_data=None)

    annotation = load_labelme(path)

    assert annotation.image_data is None
    np.testing.assert_array_equal(labelme_image(annotation, tmp_path), array)


# imagePath: Windows separators and paths outside the cohort.


def test_image_path_windows_inside_cohort(tmp_path):
    array = slice_array()
    (tmp_path / 'images').mkdir()
    PIL.Image.fromarray(array).save(tmp_path / 'images' / 'a.png')
    path = write_labelme(tmp_path / 'labels' / 'roi.json',
                         [rectangle(1, 1, 9, 9)], SIZE, SIZE,
                         image_path='..\\images\\a.png')

    annotation = load_labelme(path)

    assert labelme_image_path(annotation, tmp_path) == \
        tmp_path.absolute() / 'images' / 'a.png'
    np.testing.assert_array_equal(labelme_image(annotation, tmp_path), array)


@pytest.mark.parametrize('image_path', [
    '..\\..\\secret.png',
    '../../secret.png',
    'sub/../../../secret.png',
], ids=['windows', 'posix', 'folded'])
def test_image_path_outside_cohort_rejected(tmp_path, image_path):
    cohort = tmp_path / 'cohort'
    PIL.Image.fromarray(slice_array()).save(tmp_path / 'secret.png')
    path = write_labelme(cohort / 'labels' / 'roi.json',
                         [rectangle(1, 1, 9, 9)], SIZE, SIZE,
                         image_path=image_path)

    with pytest.raises(LabelmeError) as error:
        labelme_image(load_labelme(path), root=cohort)
    message = str(error.value)
    assert str(path) in message
    assert repr(image_path) in message
    assert 'outside the cohort folder' in message


def test_image_path_absolute_outside_rejected(tmp_path):
    secret = tmp_path / 'secret.png'
    PIL.Image.fromarray(slice_array()).save(secret)
    path = write_labelme(tmp_path / 'cohort' / 'roi.json',
                         [rectangle(1, 1, 9, 9)], SIZE, SIZE,
                         image_path=str(secret))

    with pytest.raises(LabelmeError, match='outside the cohort folder'):
        labelme_image(load_labelme(path), root=tmp_path / 'cohort')


def test_image_path_windows_absolute(tmp_path):
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 9, 9)],
                         SIZE, SIZE, image_path='C:\\scans\\a.png')

    with pytest.raises(LabelmeError, match='absolute Windows path') as error:
        labelme_image(load_labelme(path), root=tmp_path)
    assert "'C:\\\\scans\\\\a.png'" in str(error.value)


# Rectangle corners, clipping and zero-area outlines.


@pytest.mark.parametrize('corners', [((40, 50), (70, 80)),
                                     ((70, 80), (40, 50))])
def test_box_clipped_to_slice(tmp_path, corners):
    (x0, y0), (x1, y1) = corners

    box = box_of(tmp_path, [rectangle(x0, y0, x1, y1)])

    assert box == (40, 50, SIZE, SIZE)


def test_box_polygon_negative_points_clipped(tmp_path):
    box = box_of(tmp_path, [polygon([(-10, -5), (20, -5), (20, 30),
                                     (-10, 30)])])

    assert box == (0, 0, 21, 31)


def test_box_zero_area_ignored_with_note(tmp_path):
    notes: List[str] = []
    shapes = [rectangle(5, 5, 5, 30), rectangle(20, 22, 30, 32)]

    box = box_of(tmp_path, shapes, notes=notes, mode='union')

    assert box == (20, 22, 31, 33)
    [note] = notes
    assert 'shapes[0]' in note
    assert 'zero area' in note


def test_box_only_zero_area_raises(tmp_path):
    with pytest.raises(LabelmeError, match='zero area') as error:
        box_of(tmp_path, [rectangle(5, 5, 5, 30), circle((9, 9), (9, 9))])
    assert 'roi.json' in str(error.value)


# Shape types.


def test_box_oriented_rectangle(tmp_path):
    shape = {'label': 'lesion', 'shape_type': 'oriented_rectangle',
             'points': [[30, 10], [50, 30], [30, 50], [10, 30]]}

    assert box_of(tmp_path, [shape]) == (10, 10, 51, 51)


def test_box_circle_beats_small_polygon(tmp_path):
    shapes = [polygon([(2, 2), (6, 2), (4, 6)]), circle((32, 32), (32, 42))]

    assert box_of(tmp_path, shapes) == (22, 22, 43, 43)


@pytest.mark.parametrize('shape_type, points', [
    ('line', [[1, 1], [60, 60]]),
    ('point', [[3, 50]]),
    ('linestrip', [[1, 1], [30, 5], [60, 60]]),
    ('mask', [[1, 1], [60, 60]]),
])
def test_box_non_outline_noted(tmp_path, shape_type, points):
    notes: List[str] = []
    shapes = [{'label': 'lesion', 'shape_type': shape_type,
               'points': points}, rectangle(20, 22, 30, 32)]

    box = box_of(tmp_path, shapes, notes=notes, mode='union')

    assert box == (20, 22, 31, 33)
    [note] = notes
    assert f'shapes[0] ({shape_type}' in note
    assert 'outlines no area' in note


def test_box_only_line_and_point_raises(tmp_path):
    shapes = [{'label': 'lesion', 'shape_type': 'line',
               'points': [[1, 1], [60, 60]]},
              {'label': 'lesion', 'shape_type': 'point',
               'points': [[3, 50]]}]

    with pytest.raises(LabelmeError) as error:
        box_of(tmp_path, shapes)
    message = str(error.value)
    assert "['line', 'point']" in message
    assert 'polygon, rectangle or circle' in message


def test_load_non_finite_point(tmp_path):
    path = tmp_path / 'roi.json'
    path.write_text('{"shapes": [{"label": "lesion", "shape_type": '
                    '"rectangle", "points": [[1, 2], [NaN, 6]]}]}',
                    encoding='utf-8')

    with pytest.raises(LabelmeError, match=r'shapes\[0\].*finite'):
        load_labelme(path)


# Encodings.


@pytest.mark.parametrize('encoding', ['utf-8', 'utf-8-sig', 'gb18030',
                                      'gbk', 'utf-16'])
def test_load_encoding(tmp_path, encoding):
    path = write_labelme_encoded(tmp_path / 'roi.json',
                                 [rectangle(1, 2, 5, 6, label='病灶')],
                                 encoding)

    annotation = load_labelme(path)

    assert annotation.shapes[0].label == '病灶'


def test_load_undecodable(tmp_path):
    path = tmp_path / 'roi.json'
    path.write_bytes(b'{"shapes": [], "imagePath": "\xff\xfe\xff.png"}')

    with pytest.raises(LabelmeError, match='neither UTF-8 nor GBK') as error:
        load_labelme(path)
    assert str(path) in str(error.value)


# Image size.


def test_image_size_mismatch_names_both(tmp_path):
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 4, 4)], 48,
                         64)

    with pytest.raises(LabelmeError) as error:
        check_image_size(load_labelme(path), 64, 64)
    message = str(error.value)
    assert str(path) in message
    assert 'imageHeight x imageWidth is 48x64' in message
    assert 'the slice is 64x64' in message
    assert 'draw the outline again' in message


def test_image_size_one_side_given(tmp_path):
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 4, 4)], None,
                         32)
    annotation = load_labelme(path)

    check_image_size(annotation, 99, 32)
    with pytest.raises(LabelmeError, match='Nonex32'):
        check_image_size(annotation, 99, 40)


@pytest.mark.parametrize('value', ['abc', -4, 12.5])
def test_image_size_invalid(tmp_path, value):
    path = write_labelme(tmp_path / 'roi.json', [rectangle(1, 1, 4, 4)],
                         value, 32)

    with pytest.raises(LabelmeError, match=f'imageHeight={value!r}'):
        load_labelme(path)


# Lesion labels.


def test_box_lesion_label_chinese(tmp_path):
    shapes = [rectangle(5, 5, 60, 60, label='椎体'),
              rectangle(20, 22, 30, 32, label='病灶')]

    box = box_of(tmp_path, shapes, lesion_labels=['病灶'])

    assert box == (20, 22, 31, 33)


def test_box_lesion_label_case_and_spaces(tmp_path):
    shapes = [rectangle(20, 22, 30, 32, label=' Lesion ')]

    assert box_of(tmp_path, shapes, lesion_labels=['lesion']) == \
        (20, 22, 31, 33)


def test_box_no_lesion_label_names_option(tmp_path):
    shapes = [rectangle(5, 5, 60, 60, label='椎体'),
              polygon([(1, 1), (9, 1), (5, 9)], label='disc')]

    with pytest.raises(LabelmeError) as error:
        box_of(tmp_path, shapes, lesion_labels=['病灶'])
    message = str(error.value)
    assert "labels found: ['disc', '椎体']" in message
    assert '--lesion-labels' in message
    assert 'roi.json' in message


def test_box_no_shapes(tmp_path):
    with pytest.raises(LabelmeError, match='has no shapes'):
        box_of(tmp_path, [])


def test_box_empty_lesion_labels(tmp_path):
    with pytest.raises(ValueError, match='lesion_labels is empty'):
        box_of(tmp_path, [rectangle(1, 1, 9, 9)], lesion_labels=[])


# Through prepare_cohort.


def write_png_cohort(root: Path, n_patients: int = 10,
                     label: str = 'lesion') -> None:
    """Write one PNG slice and one Labelme file per patient.

    Patients ``p0``, ``p2``, ... are STB and ``p1``, ``p3``, ... SM, all at
    site A. The slices are found only through the Labelme ``imagePath``.
    """
    patients, rois = [], []
    for number in range(n_patients):
        name = f'p{number}'
        PIL.Image.fromarray(slice_array(number)).save(
            _mkdir(root / 'images') / f'{name}.png')
        write_labelme(root / 'annotations' / f'{name}.json',
                      [rectangle(18, 16, 40, 36, label=label)], SIZE, SIZE,
                      image_path=f'../images/{name}.png')
        patients.append((name, 'A', 'STB' if number % 2 == 0 else 'SM'))
        rois.append((name, name, f'annotations/{name}.json'))
    write_table(root / 'patients.csv', ('patient_id', 'site', 'diagnosis'),
                patients)
    write_table(root / 'rois.csv', ('roi_id', 'patient_id', 'annotation'),
                rois)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def broken_cohort(tmp_path):
    """A PNG cohort in which four of ten Labelme files have a problem."""
    root = tmp_path / 'cohort'
    write_png_cohort(root)
    PIL.Image.fromarray(slice_array()).save(tmp_path / 'outside.png')
    annotations = root / 'annotations'
    write_labelme(annotations / 'p0.json', [rectangle(18, 16, 40, 36)], SIZE,
                  SIZE, image_path='..\\..\\outside.png')
    write_labelme(annotations / 'p1.json', [rectangle(18, 16, 40, 36)], 48,
                  SIZE, image_path='../images/p1.png')
    write_labelme(annotations / 'p2.json',
                  [rectangle(18, 16, 40, 36, label='vertebra')], SIZE, SIZE,
                  image_path='../images/p2.png')
    write_labelme(annotations / 'p3.json', [
        {'label': 'lesion', 'shape_type': 'line', 'points': [[1, 1], [9, 9]]},
        rectangle(5, 5, 5, 30),
        rectangle(18, 16, 40, 36),
    ], SIZE, SIZE, image_path='../images/p3.png')
    (annotations / 'p4.json').write_bytes(b'{"shapes": [\xff]}')
    return root


def test_prepare_skips_broken_labelme(broken_cohort, tmp_path):
    out_dir = tmp_path / 'out'
    config = PreprocessConfig(n4=False, lesion_labels=('lesion',))

    manifest = prepare_cohort(broken_cohort, out_dir, config,
                              val_fraction=0.2, n_folds=0, workers=1,
                              progress=False)

    prepared = {record['roi_id'] for record in manifest['rois']}
    assert prepared == {'p3', 'p5', 'p6', 'p7', 'p8', 'p9'}
    quality = json.loads((out_dir / 'quality.json').read_text())
    assert quality['n_skipped'] == 4
    messages = {problem['roi_ids'][0]: problem['message']
                for problem in quality['problems']}
    assert 'leads outside the cohort folder' in messages['p0']
    assert 'p0.json' in messages['p0']
    assert '48x64' in messages['p1']
    assert "labels found: ['vertebra']" in messages['p2']
    assert 'neither UTF-8 nor GBK' in messages['p4']
    notes = quality['notes']
    assert any('shapes[0] (line' in note for note in notes)
    assert any('shapes[1]' in note and 'zero area' in note for note in notes)
    report = (out_dir / 'quality.md').read_text()
    assert '## Notes' in report
    assert 'leads outside the cohort folder' in report
    # The notes stay out of the manifest.
    assert all('notes' not in record for record in manifest['rois'])


def test_prepare_strict_stops_at_outside_path(broken_cohort, tmp_path):
    with pytest.raises(LabelmeError, match='leads outside the cohort'):
        prepare_cohort(broken_cohort, tmp_path / 'out', FAST,
                       val_fraction=0.2, n_folds=0, workers=1,
                       progress=False, strict=True)


def test_prepare_chinese_names_end_to_end(tmp_path):
    root = tmp_path / '队列'
    shapes = [rectangle(4, 4, 60, 60, label='椎体'),
              rectangle(18, 16, 40, 36, label='病灶')]

    # 患者1: image column with a Chinese file name, UTF-8 Labelme file.
    write_image(root / '图像' / '患者1.nii.gz',
                slice_array(1).astype(np.float32))
    write_labelme(root / '标注' / '病灶1.json', shapes, SIZE, SIZE)
    # 患者2: the Labelme file in GB18030, as older Chinese tools wrote it.
    write_image(root / '图像' / '患者2.nii.gz',
                slice_array(2).astype(np.float32))
    write_labelme_encoded(root / '标注' / '病灶2.json', shapes, 'gb18030')
    # 患者3: no image column; imagePath with Windows separators.
    PIL.Image.fromarray(slice_array(3)).save(
        _mkdir(root / '图像') / '患者3.png')
    write_labelme(root / '标注' / '病灶3.json', shapes, SIZE, SIZE,
                  image_path='..\\图像\\患者3.png')
    # 患者4: no image column; the slice is embedded, imagePath is null.
    write_labelme(root / '标注' / '病灶4.json', shapes, SIZE, SIZE,
                  image_data=img_arr_to_b64(slice_array(4)))

    # patients.csv in GBK with Chinese site names.
    (root / 'patients.csv').write_bytes(
        'patient_id,site,diagnosis\n患者1,医院甲,STB\n患者2,医院甲,SM\n'
        '患者3,医院甲,STB\n患者4,医院甲,SM\n'.encode('gbk'))
    write_table(root / 'rois.csv', ('roi_id', 'patient_id', 'image',
                                    'annotation'), [
        ('病灶1', '患者1', '图像/患者1.nii.gz', '标注/病灶1.json'),
        ('病灶2', '患者2', '图像/患者2.nii.gz', '标注/病灶2.json'),
        ('病灶3', '患者3', '', '标注\\病灶3.json'),
        ('病灶4', '患者4', '', '标注/病灶4.json'),
    ])
    out_dir = tmp_path / 'out'
    config = PreprocessConfig(n4=False, lesion_labels=('病灶',))

    manifest = prepare_cohort(root, out_dir, config, val_fraction=0.5,
                              n_folds=0, workers=1, progress=False)

    quality = json.loads((out_dir / 'quality.json').read_text())
    assert quality['problems'] == []
    assert quality['table_problems'] == []
    records = {record['roi_id']: record for record in manifest['rois']}
    assert set(records) == {'病灶1', '病灶2', '病灶3', '病灶4'}
    for roi_id, record in records.items():
        # The 病灶 rectangle, not the larger 椎体 one.
        assert record['box'] == [18, 16, 41, 37], roi_id
        assert (out_dir / record['crop']).is_file(), roi_id
    assert records['病灶1']['source'] == '图像/患者1.nii.gz'
    assert records['病灶3']['source'] is None
    assert {record['site'] for record in manifest['rois']} == {'医院甲'}
