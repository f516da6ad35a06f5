"""Tests of the RandomAffine transform, built as a config would build it."""
import math

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import TransformBroadcaster
from mmengine.registry import DefaultScope
from mmpretrain.registry import TRANSFORMS

import stbsm_mm.transforms  # noqa: F401  (registers RandomAffine)
from stbsm_mm.transforms import RandomAffine

NO_AUGMENTATION = dict(translate_prob=0.0,
                       rotate_prob=0.0,
                       flip_prob=0.0,
                       zoom_prob=0.0,
                       scale_prob=0.0)


def build(**kwargs) -> RandomAffine:
    """Build RandomAffine from a config dict with every component off."""
    cfg = dict(type='RandomAffine', **NO_AUGMENTATION)
    cfg.update(kwargs)
    return TRANSFORMS.build(cfg)


def asymmetric_image(height: int = 9, width: int = 12) -> np.ndarray:
    """A uint8 image that no flip or rotation maps onto itself."""
    return (np.arange(height * width, dtype=np.uint8) * 7 % 251).reshape(
        height, width)


def force_upper_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every uniform draw return the upper end of its range."""
    monkeypatch.setattr(np.random, 'uniform',
                        lambda low=0.0, high=1.0, size=None: high)


def centroid(img: np.ndarray) -> np.ndarray:
    """Intensity-weighted (x, y) centroid of a gray image."""
    ys, xs = np.indices(img.shape)
    weights = img.astype(np.float64)
    return np.array([(xs * weights).sum(), (ys * weights).sum()
                     ]) / weights.sum()


def test_registry_builds_class():
    transform = TRANSFORMS.build(dict(type='RandomAffine'))

    assert TRANSFORMS.get('RandomAffine') is RandomAffine
    assert isinstance(transform, RandomAffine)
    assert transform.translate_prob == 0.5
    assert transform.rotate_prob == 0.5
    assert transform.flip_prob == 0.5
    assert transform.zoom_prob == 0.5
    assert transform.scale_prob == 0.5


def test_repr_lists_parameters():
    text = repr(build(max_rotate_degree=7.0, interpolation='nearest'))

    assert text.startswith('RandomAffine(')
    for name in ('translate_ratio', 'translate_prob', 'max_rotate_degree=7.0',
                 'rotate_prob', 'flip_prob', 'flip_direction', 'zoom_range',
                 'zoom_prob', 'scale_range', 'scale_prob',
                 "interpolation='nearest'", 'border_mode', 'border_value'):
        assert name in text


@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
@pytest.mark.parametrize('interpolation', ['nearest', 'bilinear', 'bicubic'])
def test_zero_probabilities_identity(dtype, interpolation):
    img = asymmetric_image().astype(dtype)
    results = build(interpolation=interpolation)(dict(img=img.copy()))

    assert np.array_equal(results['img'], img)
    assert results['img'].dtype == dtype
    assert np.array_equal(results['affine_matrix'], np.eye(3))
    assert results['affine_matrix'].dtype == np.float32
    assert results['flip'] is False
    assert results['flip_direction'] is None


@pytest.mark.parametrize('direction, expected', [
    ('horizontal', np.fliplr),
    ('vertical', np.flipud),
    ('diagonal', lambda img: np.flipud(np.fliplr(img))),
])
def test_flip_matches_numpy(direction, expected):
    img = asymmetric_image()
    transform = build(flip_prob=1.0,
                      flip_direction=direction,
                      interpolation='nearest')
    results = transform(dict(img=img.copy()))

    assert np.array_equal(results['img'], expected(img))
    assert results['flip'] is True
    assert results['flip_direction'] == direction


def test_flip_direction_list_choice():
    transform = build(flip_prob=1.0,
                      flip_direction=['horizontal', 'vertical'],
                      interpolation='nearest')
    img = asymmetric_image()
    np.random.seed(0)

    seen = set()
    for _ in range(40):
        results = transform(dict(img=img.copy()))
        direction = results['flip_direction']
        seen.add(direction)
        expected = np.fliplr(img) if direction == 'horizontal' else np.flipud(
            img)
        assert np.array_equal(results['img'], expected)

    assert seen == {'horizontal', 'vertical'}


def test_rotation_90_matches_rot90(monkeypatch):
    force_upper_bound(monkeypatch)
    img = asymmetric_image(11, 11)
    transform = build(rotate_prob=1.0,
                      max_rotate_degree=90.0,
                      interpolation='nearest')
    results = transform(dict(img=img.copy()))

    # A positive angle turns the content counter-clockwise, as np.rot90 does.
    assert np.array_equal(results['img'], np.rot90(img))
    np.testing.assert_allclose(results['affine_matrix'][:2, :2],
                               [[0.0, 1.0], [-1.0, 0.0]],
                               atol=1e-6)


def test_rotation_matrix_small_angle():
    transform = build(rotate_prob=1.0, max_rotate_degree=5.0)
    np.random.seed(1)
    img = np.zeros((21, 31), np.float32)
    matrix = transform(dict(img=img))['affine_matrix'].astype(np.float64)

    linear = matrix[:2, :2]
    angle = math.degrees(math.atan2(linear[0, 1], linear[0, 0]))
    centre = np.array([15.0, 10.0, 1.0])
    assert 0.0 < abs(angle) <= 5.0
    np.testing.assert_allclose(linear @ linear.T, np.eye(2), atol=1e-6)
    np.testing.assert_allclose(matrix @ centre, centre, atol=1e-4)
    np.testing.assert_allclose(matrix[2], [0.0, 0.0, 1.0])


def test_translation_moves_dot(monkeypatch):
    force_upper_bound(monkeypatch)
    img = np.zeros((30, 40), np.uint8)
    img[10:13, 5:8] = 255
    transform = build(translate_prob=1.0,
                      translate_ratio=(0.2, 0.1),
                      interpolation='nearest')
    results = transform(dict(img=img.copy()))

    # The upper bound of the range shifts by 0.2 * 40 = 8 and 0.1 * 30 = 3.
    shift = centroid(results['img']) - centroid(img)
    np.testing.assert_allclose(shift, [8.0, 3.0])
    assert results['img'].sum() == img.sum()
    np.testing.assert_allclose(results['affine_matrix'][:2, 2], [8.0, 3.0])


def test_translation_shift_matches_matrix():
    img = np.zeros((30, 40), np.float32)
    img[14:17, 18:21] = 1.0
    transform = build(translate_prob=1.0, translate_ratio=(0.1, 0.1))
    np.random.seed(5)
    results = transform(dict(img=img.copy()))

    shift = centroid(results['img']) - centroid(img)
    recorded = results['affine_matrix'][:2, 2]
    assert np.abs(shift).max() > 0.1
    assert abs(shift[0]) <= 4.0
    assert abs(shift[1]) <= 3.0
    np.testing.assert_allclose(shift, recorded, atol=1e-3)


def test_translation_fills_border_value(monkeypatch):
    force_upper_bound(monkeypatch)
    img = np.full((10, 10), 100, np.uint8)
    transform = build(translate_prob=1.0,
                      translate_ratio=(0.3, 0.0),
                      border_value=7)
    out = transform(dict(img=img))['img']

    assert np.all(out[:, :3] == 7)
    assert np.all(out[:, 3:] == 100)


def test_zoom_enlarges_square():
    img = np.zeros((41, 41), np.uint8)
    img[15:26, 15:26] = 255
    transform = build(zoom_prob=1.0,
                      zoom_range=(1.5, 1.5),
                      interpolation='nearest')
    out = transform(dict(img=img.copy()))['img']

    side = 11 * 1.5
    count = np.count_nonzero(out)
    assert (side - 1)**2 <= count <= (side + 1)**2
    assert np.array_equal(out, out.T)
    np.testing.assert_allclose(centroid(out), [20.0, 20.0])


def test_zoom_below_one_shrinks_square():
    img = np.zeros((41, 41), np.uint8)
    img[10:31, 10:31] = 255
    transform = build(zoom_prob=1.0,
                      zoom_range=(0.5, 0.5),
                      interpolation='nearest')
    out = transform(dict(img=img.copy()))['img']

    count = np.count_nonzero(out)
    assert 9**2 <= count <= 12**2


def test_scale_stretches_axes_independently():
    img = np.zeros((61, 61), np.uint8)
    img[25:36, 25:36] = 255
    transform = build(scale_prob=1.0,
                      scale_range=(0.6, 2.0),
                      interpolation='nearest')

    # Find a seed whose x and y factors differ clearly.
    for seed in range(50):
        np.random.seed(seed)
        results = transform(dict(img=img.copy()))
        factor_x, factor_y = np.diag(results['affine_matrix'])[:2]
        if abs(factor_x - factor_y) > 0.5:
            break
    else:
        pytest.fail('no seed in 0..49 drew x and y factors 0.5 apart')

    rows = np.flatnonzero(results['img'].any(axis=1))
    cols = np.flatnonzero(results['img'].any(axis=0))
    width = cols[-1] - cols[0] + 1
    height = rows[-1] - rows[0] + 1
    assert 0.6 <= factor_x <= 2.0
    assert 0.6 <= factor_y <= 2.0
    assert results['affine_matrix'][0, 1] == 0.0
    assert results['affine_matrix'][1, 0] == 0.0
    assert abs(width - 11 * factor_x) <= 1.0
    assert abs(height - 11 * factor_y) <= 1.0


@pytest.mark.parametrize('shape, dtype', [
    ((32, 24), np.uint8),
    ((32, 24, 1), np.uint8),
    ((32, 24, 3), np.uint8),
    ((32, 24), np.float32),
    ((32, 24, 3), np.float32),
    ((32, 24), np.uint16),
    ((32, 24, 6), np.float32),
])
def test_shape_dtype_preserved(shape, dtype):
    rng = np.random.default_rng(0)
    img = (rng.random(shape) * 200).astype(dtype)
    transform = TRANSFORMS.build(
        dict(type='RandomAffine',
             translate_prob=1.0,
             rotate_prob=1.0,
             zoom_prob=1.0,
             scale_prob=1.0))
    np.random.seed(2)
    results = transform(dict(img=img.copy()))

    assert results['img'].shape == shape
    assert results['img'].dtype == dtype
    assert results['img_shape'] == shape[:2]
    assert not np.array_equal(results['img'], img)


def test_many_channels_warp_alike():
    rng = np.random.default_rng(1)
    gray = (rng.random((20, 16)) * 255).astype(np.uint8)
    img = np.repeat(gray[..., None], 6, axis=2)
    transform = build(rotate_prob=1.0, max_rotate_degree=30.0)
    np.random.seed(3)
    out = transform(dict(img=img))['img']
    np.random.seed(3)
    gray_out = transform(dict(img=gray.copy()))['img']

    assert out.shape == (20, 16, 6)
    assert not np.array_equal(gray_out, gray)
    for channel in range(6):
        assert np.array_equal(out[..., channel], gray_out)


def test_seed_reproducible():
    transform = TRANSFORMS.build(dict(type='RandomAffine'))
    img = asymmetric_image(24, 32)

    def run(seed: int) -> list:
        np.random.seed(seed)
        return [transform(dict(img=img.copy())) for _ in range(5)]

    first, second, other = run(3), run(3), run(4)
    for a, b in zip(first, second):
        assert np.array_equal(a['img'], b['img'])
        assert np.array_equal(a['affine_matrix'], b['affine_matrix'])
    assert any(not np.array_equal(a['affine_matrix'], c['affine_matrix'])
               for a, c in zip(first, other))
    assert any(not np.array_equal(a['img'], c['img'])
               for a, c in zip(first, other))


def test_broadcaster_shares_params():
    img = asymmetric_image(24, 32)
    broadcaster = TransformBroadcaster(
        transforms=[build(rotate_prob=1.0, translate_prob=1.0)],
        mapping={'img': ['img', 'mask']},
        auto_remap=True,
        share_random_params=True)
    np.random.seed(0)
    results = broadcaster(dict(img=img.copy(), mask=img.copy()))

    assert not np.array_equal(results['img'], img)
    assert np.array_equal(results['img'], results['mask'])


@pytest.mark.parametrize('kwargs, name', [
    (dict(translate_ratio=(-0.1, 0.1)), 'translate_ratio'),
    (dict(translate_ratio=(0.1, 1.5)), 'translate_ratio'),
    (dict(translate_ratio=(0.1, 0.1, 0.1)), 'translate_ratio'),
    (dict(translate_ratio='wide'), 'translate_ratio'),
    (dict(translate_prob=1.5), 'translate_prob'),
    (dict(rotate_prob=-0.1), 'rotate_prob'),
    (dict(flip_prob=2), 'flip_prob'),
    (dict(zoom_prob=None), 'zoom_prob'),
    (dict(scale_prob=True), 'scale_prob'),
    (dict(max_rotate_degree=-5), 'max_rotate_degree'),
    (dict(max_rotate_degree=270), 'max_rotate_degree'),
    (dict(flip_direction='sideways'), 'flip_direction'),
    (dict(flip_direction=[]), 'flip_direction'),
    (dict(zoom_range=(1.1, 0.9)), 'zoom_range'),
    (dict(zoom_range=(-0.5, 1.0)), 'zoom_range'),
    (dict(zoom_range=(0.0, 1.0)), 'zoom_range'),
    (dict(scale_range=(1.2, 0.8)), 'scale_range'),
    (dict(scale_range=1.0), 'scale_range'),
    (dict(interpolation='lanczos'), 'interpolation'),
    (dict(border_mode='wrap'), 'border_mode'),
    (dict(border_value='black'), 'border_value'),
])
def test_invalid_argument_raises(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        TRANSFORMS.build(dict(type='RandomAffine', **kwargs))

    assert repr(next(iter(kwargs.values()))) in str(info.value)


def test_border_value_channel_mismatch():
    transform = build(border_value=(1, 2))

    with pytest.raises(ValueError, match='border_value'):
        transform(dict(img=np.zeros((8, 8, 3), np.uint8)))


def test_unsupported_dtype_raises():
    transform = build()

    with pytest.raises(TypeError, match='int32'):
        transform(dict(img=np.zeros((8, 8), np.int32)))


def test_missing_img_raises():
    with pytest.raises(KeyError, match='img'):
        build()(dict(img_path='crop.png'))


def test_pipeline_packs_inputs(tmp_path):
    img = np.zeros((37, 53, 3), np.uint8)
    img[5:20, 8:30] = (40, 120, 220)
    path = tmp_path / 'crop.png'
    assert cv2.imwrite(str(path), img)
    pipeline_cfg = dict(type='Compose',
                        transforms=[
                            dict(type='LoadImageFromFile'),
                            dict(type='RandomAffine', flip_prob=1.0),
                            dict(type='PackInputs'),
                        ])

    # Inner transforms are looked up in the default scope, as a Runner with
    # default_scope='mmpretrain' sets it.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline = TRANSFORMS.build(pipeline_cfg)
    np.random.seed(0)
    packed = pipeline(dict(img_path=str(path)))

    assert isinstance(packed['inputs'], torch.Tensor)
    assert tuple(packed['inputs'].shape) == (3, 37, 53)
    assert packed['inputs'].dtype == torch.uint8
    assert packed['data_samples'].flip is True
    assert packed['data_samples'].flip_direction == 'horizontal'
    assert packed['data_samples'].img_shape == (37, 53)
