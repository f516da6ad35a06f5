"""Grad-CAM explainer, overlays and tools/vis_cam.py on real crops.

The models are randomly initialised (seeded), so the maps show no learned
evidence. The tests check geometry, value range and wiring.
"""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import run_tool
from stbsm_mm.io import lesion_box, load_labelme
from stbsm_mm.visualization import (CAMExplainer, TokenGridTracker, overlay,
                                    place_on_slice, resolve_layer)
from stbsm_mm.visualization.cam import to_square_pixels

CONFIGS = Path(__file__).resolve().parents[1] / 'configs' / 'stbsm'
BACKBONES = ['resnet34', 'resnet101', 'efficientnet-b3', 'mvitv2']
# A tall lumbar ROI (about 181 x 71 px), so the pipeline pads it on the
# right. Its slice is the 8-bit PNG export of the demo cohort.
ROI = '100_t2_ivd3'
SLICE = '100_t2'

_explainers = {}


def explainer_for(name: str, **kwargs) -> CAMExplainer:
    """Build (once per module and arguments) a seeded, random explainer."""
    key = (name, tuple(sorted(kwargs.items())))
    if key not in _explainers:
        torch.manual_seed(0)
        _explainers[key] = CAMExplainer.from_config(
            CONFIGS / f'{name}_stbsm.py', **kwargs)
    return _explainers[key]


_results = {}


def default_result(name: str, crop_path: Path) -> dict:
    """Explain the crop file once per backbone, for the predicted class."""
    if name not in _results:
        _results[name] = explainer_for(name).explain(crop_path)
    return _results[name]


@pytest.fixture(scope='module')
def real_crop(demo_cohort, tmp_path_factory):
    """A lesion crop cut from a real slice at its Labelme box."""
    slice_image = cv2.imread(
        str(demo_cohort / 'images_png' / f'{SLICE}.png'),
        cv2.IMREAD_GRAYSCALE)
    annotation = load_labelme(demo_cohort / 'annotations' / 'rois' /
                              f'{ROI}.json')
    box = lesion_box(annotation, *slice_image.shape)
    x0, y0, x1, y1 = box
    crop = np.ascontiguousarray(slice_image[y0:y1, x0:x1])
    path = tmp_path_factory.mktemp('cam_crop') / f'{ROI}.png'
    cv2.imwrite(str(path), crop)
    return dict(path=path, crop=crop, slice=slice_image, box=box)


@pytest.mark.parametrize('name', BACKBONES)
def test_cam_backbone(name, real_crop):
    result = default_result(name, real_crop['path'])
    cam = result['cam']

    assert real_crop['crop'].shape[0] != real_crop['crop'].shape[1]
    assert cam.shape == real_crop['crop'].shape
    assert cam.dtype == np.float32
    assert cam.min() >= 0.0
    assert cam.max() <= 1.0
    assert cam.std() > 1e-3, 'the map is constant'
    assert result['scores'].shape == (2, )
    assert result['scores'].sum() == pytest.approx(1.0, abs=1e-5)
    assert result['target_class'] == int(result['scores'].argmax())


def test_cam_array_matches_file(real_crop):
    from_file = default_result('resnet34', real_crop['path'])
    target = from_file['target_class']

    from_array = explainer_for('resnet34').explain(real_crop['crop'],
                                                   target_class=target)

    assert from_array['target_class'] == target
    np.testing.assert_allclose(from_array['scores'], from_file['scores'],
                               atol=1e-5)
    np.testing.assert_allclose(from_array['cam'], from_file['cam'],
                               atol=1e-4)


class _FixedMap:
    """Stand-in for a pytorch-grad-cam object that returns a fixed map."""

    def __init__(self, cam: np.ndarray) -> None:
        self.cam = cam
        self.outputs = torch.tensor([[2.0, 0.0]])

    def __call__(self, input_tensor, targets):
        return self.cam[None]


def test_cam_padding_undone(real_crop):
    # The 181 x 71 crop fills the left 181/181 x 71/181 of the padded
    # square, so a hot block in the network input's top-left 112 x 44
    # pixels covers the crop's top-left 90 x 35 pixels.
    explainer = CAMExplainer(explainer_for('resnet34').model)
    explainer.close()
    network_map = np.zeros((224, 224), np.float32)
    network_map[:112, :44] = 1.0
    explainer.cam = _FixedMap(network_map)

    result = explainer.explain(real_crop['crop'])
    cam = result['cam']

    assert real_crop['crop'].shape == (181, 71)
    assert result['target_class'] == 0
    assert cam[10, 30] == pytest.approx(1.0)
    assert cam[80, 10] == pytest.approx(1.0)
    assert cam[10, 60] == pytest.approx(0.0)
    assert cam[150, 10] == pytest.approx(0.0)


def test_cam_target_class_invalid(real_crop):
    with pytest.raises(ValueError, match='target_class=2'):
        explainer_for('resnet34').explain(real_crop['path'], target_class=2)


def test_mvit_tokens_reshape(real_crop):
    explainer = explainer_for('mvitv2')
    default_result('mvitv2', real_crop['path'])
    tracker = explainer.cam.reshape_transform

    assert isinstance(tracker, TokenGridTracker)
    # mvitv2-small pools 56x56 tokens (stride 4) down to 7x7 in stage 4.
    assert tracker.grids[49] == (7, 7)
    tokens = torch.arange(2 * 49 * 3, dtype=torch.float32).reshape(2, 49, 3)
    grid = tracker(tokens)
    assert grid.shape == (2, 3, 7, 7)
    assert grid[1, 2, 4, 5] == tokens[1, 4 * 7 + 5, 2]
    with pytest.raises(ValueError, match='50 tokens'):
        tracker(torch.zeros(1, 50, 3))


def test_mvit_block_target(real_crop):
    model = explainer_for('mvitv2').model
    explainer = CAMExplainer(model, target_layer='backbone.blocks[-1]')
    try:
        cam = explainer.explain(real_crop['crop'])['cam']
    finally:
        explainer.close()

    assert cam.shape == real_crop['crop'].shape
    assert cam.min() >= 0.0
    assert cam.max() <= 1.0
    assert cam.std() > 1e-3, 'the map is constant'


def test_layer_name_invalid():
    model = explainer_for('resnet34').model

    with pytest.raises(ValueError, match='backbone.layer9.0') as error:
        CAMExplainer(model, target_layer='backbone.layer9.0')
    assert 'backbone.layer4' in str(error.value)
    with pytest.raises(ValueError, match='backbone.layer4.7') as error:
        resolve_layer(model, 'backbone.layer4.7')
    assert 'backbone.layer4.2' in str(error.value)
    with pytest.raises(ValueError, match='empty'):
        resolve_layer(model, '')


def test_layer_name_indices():
    model = explainer_for('resnet34').model

    assert resolve_layer(model, 'backbone.layer4.2') is model.backbone.layer4[2]
    assert resolve_layer(model, 'backbone.layer4[-1]') is (
        model.backbone.layer4[2])


def test_overlay_shape(real_crop):
    crop = real_crop['crop']
    cam = np.zeros(crop.shape, np.float32)
    cam[:10, :10] = 1.0

    rgb = overlay(crop, cam, alpha=0.5)
    gray = overlay(crop, cam, alpha=0.0)

    assert rgb.shape == crop.shape + (3, )
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(gray[..., 0], crop)
    assert not np.array_equal(rgb[:10, :10, 0], rgb[:10, :10, 2])
    with pytest.raises(ValueError, match='cam has shape'):
        overlay(crop, cam[:-1])


def test_place_on_slice_box(real_crop):
    slice_image = real_crop['slice']
    x0, y0, x1, y1 = real_crop['box']
    cam = np.ones((7, 7), np.float32)

    rgb = place_on_slice(slice_image, cam, real_crop['box'])

    assert rgb.shape == slice_image.shape + (3, )
    outside = np.ones(slice_image.shape, bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(rgb[..., 1][outside], slice_image[outside])
    inside = rgb[y0:y1, x0:x1].astype(int)
    assert (inside[..., 0] != inside[..., 2]).any()
    with pytest.raises(ValueError, match='outside'):
        place_on_slice(slice_image, cam, (0, 0, 10_000, 10))


def test_square_pixels_resize():
    image = np.zeros((40, 30, 3), np.uint8)
    image[10:20, 5:15] = 255

    wide = to_square_pixels(image, (0.6, 0.3))
    tall = to_square_pixels(image[..., 0], (0.25, 0.5))

    assert wide.shape == (40, 60, 3)
    assert tall.shape == (80, 30)
    assert wide[15, 20].tolist() == [255, 255, 255]
    assert wide[15, 35].tolist() == [0, 0, 0]
    assert to_square_pixels(image, (0.7, 0.7)) is image
    with pytest.raises(ValueError, match='spacing'):
        to_square_pixels(image, (0.5, 0.0))


def test_contact_sheet_row_label():
    vis_cam = load_vis_cam()

    assert vis_cam.row_label('SM', False, 8, 20) == 'SM\nwrong (8 of 20 shown)'
    assert vis_cam.row_label('STB', True, 3, 3) == 'STB\ncorrect (3)'


def load_vis_cam():
    """Import tools/vis_cam.py as a module."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / 'tools' / 'vis_cam.py'
    spec = importlib.util.spec_from_file_location('vis_cam_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_square(spacing) -> bool:
    return abs(spacing[0] - spacing[1]) <= 1e-6 * spacing[0]


def make_split_run(spider_prepared, tmp_path, split, chosen):
    """Copy ``chosen`` samples into a data root as ``<split>.json``.

    Returns the data root and a checkpoint of a randomly initialised
    ResNet34.
    """
    data_root = tmp_path / 'prepared'
    (data_root / 'annotations').mkdir(parents=True)
    shutil.copy(spider_prepared / 'manifest.json', data_root)
    metainfo = json.loads(
        (spider_prepared / 'annotations' / 'all.json').read_text())['metainfo']
    for sample in chosen:
        target = data_root / sample['img_path']
        target.parent.mkdir(exist_ok=True)
        shutil.copy(spider_prepared / sample['img_path'], target)
    shutil.copytree(spider_prepared / 'slices', data_root / 'slices')
    (data_root / 'annotations' / f'{split}.json').write_text(
        json.dumps(dict(metainfo=metainfo, data_list=chosen)))
    model = explainer_for('resnet34').model
    checkpoint = tmp_path / 'random.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    return data_root, checkpoint


def test_vis_cam_split_sheet(spider_prepared, tmp_path):
    # A two-ROI split (one per class, one slice with non-square pixels and
    # one with square pixels) of the prepared real cohort keeps the run
    # short, and the tool reads any annotations/<split>.json.
    manifest = json.loads((spider_prepared / 'manifest.json').read_text())
    spacings = {roi['roi_id']: roi['source_spacing']
                for roi in manifest['rois']}
    samples = json.loads(
        (spider_prepared / 'annotations' / 'all.json').read_text())
    chosen = []
    for label, square in ((0, False), (1, True)):
        chosen += [s for s in samples['data_list'] if s['gt_label'] == label
                   and is_square(spacings[s['roi_id']]) == square][:1]
    assert len(chosen) == 2
    data_root, checkpoint = make_split_run(spider_prepared, tmp_path,
                                           'subset', chosen)
    out_dir = tmp_path / 'cam'

    run_tool('tools/vis_cam.py', CONFIGS / 'resnet34_stbsm.py', checkpoint,
             '--split', 'subset', '--data-root', data_root, '--out-dir',
             out_dir, '--max-columns', '1', '--threshold', '0.0')

    sheet = cv2.imread(str(out_dir / 'contact_sheet_subset.png'))
    assert sheet is not None
    assert sheet.shape[0] > 100
    results = json.loads((out_dir / 'cam_subset.json').read_text())
    assert [r['roi_id'] for r in results['rois']] == [
        s['roi_id'] for s in chosen]
    assert results['target_layer'] == 'backbone.layer4.2'
    assert results['threshold'] == 0.0
    assert results['positive_class'] == results['classes'][0]
    for record, sample in zip(results['rois'], chosen):
        crop = cv2.imread(str(data_root / sample['img_path']))
        overlay_image = cv2.imread(str(out_dir / record['overlay']))
        assert overlay_image.shape == crop.shape
        assert len(record['box']) == 4
        assert record['pred_label'] == 0
        assert record['correct'] == (record['gt_label'] == 0)
        check_slice_overlay(spider_prepared, out_dir, record)


def test_vis_cam_threshold_file(spider_prepared, tmp_path):
    # Threshold 0 calls every ROI positive, so a threshold file that puts
    # the threshold just above every score of its positive class calls
    # none positive.
    samples = json.loads(
        (spider_prepared / 'annotations' / 'all.json').read_text())
    chosen = [s for s in samples['data_list'] if s['gt_label'] == 0][:2]
    data_root, checkpoint = make_split_run(spider_prepared, tmp_path, 'two',
                                           chosen)
    classes = samples['metainfo']['classes']
    threshold_file = tmp_path / 'threshold.json'

    def run(threshold):
        threshold_file.write_text(json.dumps(dict(
            threshold=threshold, method='youden', split='val',
            positive_class=classes[0], n_images=2,
            checkpoint_sha256='0' * 64)))
        out_dir = tmp_path / f'cam_{threshold}'
        run_tool('tools/vis_cam.py', CONFIGS / 'resnet34_stbsm.py',
                 checkpoint, '--split', 'two', '--data-root', data_root,
                 '--out-dir', out_dir, '--threshold-file', threshold_file)
        return json.loads((out_dir / 'cam_two.json').read_text())

    everything = run(0.0)
    highest = max(record['scores'][0] for record in everything['rois'])
    above = highest + (1.0 - highest) / 2
    nothing = run(above)

    assert everything['positive_class'] == classes[0]
    assert [r['pred_label'] for r in everything['rois']] == [0, 0]
    assert above > highest
    assert nothing['threshold'] == pytest.approx(above)
    assert [r['pred_label'] for r in nothing['rois']] == [1, 1]
    assert [r['correct'] for r in nothing['rois']] == [False, False]


def check_slice_overlay(data_root, out_dir, record):
    """The map is drawn inside the ROI's box on its whole slice only.

    A slice with non-square pixels is shown resized to square pixels, so
    its overlay has the slice's physical aspect ratio.
    """
    manifest = json.loads((data_root / 'manifest.json').read_text())
    entry = next(roi for roi in manifest['rois']
                 if roi['roi_id'] == record['roi_id'])
    whole = cv2.imread(str(data_root / entry['slice']), cv2.IMREAD_GRAYSCALE)
    placed = cv2.imread(str(out_dir / record['slice_overlay']))
    spacing_x, spacing_y = entry['source_spacing']
    if not is_square(entry['source_spacing']):
        height, width = whole.shape
        aspect = (width * spacing_x) / (height * spacing_y)
        assert placed.shape[:2] != whole.shape
        assert max(placed.shape[:2]) >= max(whole.shape)
        assert abs(placed.shape[1] - placed.shape[0] * aspect) <= 1.0
        # Away from the scaled box, the overlay is the resized slice.
        expected = to_square_pixels(whole, entry['source_spacing'])
        assert expected.shape == placed.shape[:2]
        scale_x = placed.shape[1] / width
        scale_y = placed.shape[0] / height
        x0, y0, x1, y1 = record['box']
        x0, x1 = int(x0 * scale_x) - 2, int(x1 * scale_x) + 3
        y0, y1 = int(y0 * scale_y) - 2, int(y1 * scale_y) + 3
        outside = np.ones(expected.shape, bool)
        outside[max(0, y0):y1, max(0, x0):x1] = False
        for channel in range(3):
            assert np.array_equal(placed[..., channel][outside],
                                  expected[outside])
        inside = placed[max(0, y0):y1, max(0, x0):x1].astype(int)
        assert np.abs(inside[..., 0] - inside[..., 2]).max() > 0
        return

    assert placed.shape[:2] == whole.shape
    x0, y0, x1, y1 = record['box']
    outside = np.ones(whole.shape, bool)
    outside[y0:y1, x0:x1] = False
    for channel in range(3):
        assert np.array_equal(placed[..., channel][outside], whole[outside])
    inside = placed[y0:y1, x0:x1].astype(int)
    assert np.abs(inside[..., 0] - inside[..., 2]).max() > 0
