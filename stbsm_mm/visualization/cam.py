"""Class activation maps (Grad-CAM) of the lesion classifiers.

The explainer runs a crop through the config's test pipeline and the model's
data preprocessor, so the map is computed on exactly the tensor the model
classifies. It then maps the map from the padded, resized network input back
to the crop's own pixel grid, and from there onto the source slice.
"""
import difflib
import re
from pathlib import Path
from typing import (TYPE_CHECKING, Callable, Dict, List, Optional, Sequence,
                    Tuple, Union)

import cv2
import numpy as np
import torch
from mmengine.logging import MMLogger
from torch import nn

if TYPE_CHECKING:
    from mmengine.config import Config

PathLike = Union[str, Path]

METHODS = ('gradcam', 'gradcam++')
MAX_SUGGESTIONS = 8


# Step 1: target layers.


def default_target_layer_name(model: nn.Module) -> str:
    """Return the dotted name of the default Grad-CAM layer of a classifier.

    The layer is the last one that still has a spatial feature grid:

    * ResNet: the last block of the last stage, ``backbone.layer4.<last>``;
    * EfficientNet: the last stage of ``backbone.layers`` (the 1x1 conv that
      widens the features before pooling);
    * MViT: the output norm of the last stage, ``backbone.norm<last>``.

    Args:
        model: An MMPreTrain ``ImageClassifier`` with a ResNet, EfficientNet
            or MViT backbone.

    Returns:
        str: A name that :func:`resolve_layer` accepts.

    Raises:
        ValueError: If the backbone type has no default; pass a layer name.

    Examples:
        >>> from mmpretrain.models import ImageClassifier
        >>> model = ImageClassifier(backbone=dict(type='ResNet', depth=18))
        >>> default_target_layer_name(model)
        'backbone.layer4.1'
    """
    from mmpretrain.models.backbones import MViT, EfficientNet, ResNet

    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, ResNet):
        last_stage = backbone.res_layers[-1]
        return f'backbone.{last_stage}.{len(getattr(backbone, last_stage)) - 1}'
    if isinstance(backbone, EfficientNet):
        return f'backbone.layers.{len(backbone.layers) - 1}'
    if isinstance(backbone, MViT):
        norm_names = [name for name, _ in backbone.named_children()
                      if re.fullmatch(r'norm\d+', name)]
        if not norm_names:
            raise ValueError(
                'The MViT backbone has no output norm (out_scales is empty); '
                'pass a layer name such as backbone.blocks.<last>.')
        last = max(norm_names, key=lambda name: int(name[4:]))
        return f'backbone.{last}'
    raise ValueError(
        f'No default Grad-CAM layer for backbone type '
        f'{type(backbone).__name__}; pass target_layer, e.g. '
        "'backbone.<stage>.<block>'.")


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the sub-module of ``model`` named by a dotted path.

    Args:
        model: The model.
        name: A dotted name such as ``backbone.layer4.2``. Indices of
            ``Sequential`` and ``ModuleList`` children may be negative and
            may be written in brackets: ``backbone.layer4[-1]``.

    Returns:
        nn.Module: The layer.

    Raises:
        ValueError: If ``name`` is empty or names no sub-module. The message
            lists the valid children at the point where the path failed and
            the closest full names.

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> resolve_layer(model, '[-1]')
        ReLU()
    """
    if not isinstance(name, str) or not name.strip('.[] '):
        raise ValueError(f'target_layer={name!r} is empty; pass a dotted '
                         'layer name such as backbone.layer4.2.')
    parts = [part for part in re.split(r'[.\[\]]+', name.strip()) if part]

    module = model
    walked: List[str] = []
    for part in parts:
        child = _child(module, part)
        if child is None:
            raise ValueError(_missing_layer_message(model, name, module,
                                                    walked))
        module = child
        walked.append(part)
    return module


def _child(module: nn.Module, part: str) -> Optional[nn.Module]:
    if re.fullmatch(r'-?\d+', part) and isinstance(
            module, (nn.Sequential, nn.ModuleList)):
        index = int(part)
        if -len(module) <= index < len(module):
            return module[index]
        return None
    return module._modules.get(part)


def _missing_layer_message(model: nn.Module, name: str, parent: nn.Module,
                           walked: Sequence[str]) -> str:
    prefix = '.'.join(walked)
    children = [f'{prefix}.{child}' if prefix else child
                for child, _ in parent.named_children()]
    all_names = [module_name for module_name, _ in model.named_modules()
                 if module_name]
    close = difflib.get_close_matches(name, all_names, n=MAX_SUGGESTIONS)
    return (f'target_layer={name!r} is not a layer of the model. Valid names '
            f'under {prefix or "the model"!r}: '
            f'{", ".join(children[:MAX_SUGGESTIONS * 2]) or "none"}; '
            f'closest names: {", ".join(close) or "none"}.')


# Step 2: token sequences of MViT back to feature maps.


class TokenGridTracker:
    """Reshape MViT token sequences ``(B, N, C)`` to maps ``(B, C, H, W)``.

    MViTv2 has no class token, and each ``MultiScaleBlock`` returns its
    tokens together with the ``(H, W)`` grid they cover. The tracker hooks
    every block and records that grid by token count. Within one stage all
    blocks share a grid. The stages differ in token count because each stage
    pools the grid. Use the instance as pytorch-grad-cam's
    ``reshape_transform``.

    Args:
        backbone: An MMPreTrain ``MViT`` backbone.

    Examples:
        >>> tracker = TokenGridTracker(model.backbone)  # doctest: +SKIP
        >>> cam = GradCAM(model, [layer], reshape_transform=tracker)  # doctest: +SKIP
    """

    def __init__(self, backbone: nn.Module) -> None:
        self.grids: Dict[int, Tuple[int, int]] = {}
        self._handles = [
            block.register_forward_hook(self._record)
            for block in backbone.blocks
        ]

    def _record(self, module: nn.Module, inputs, output) -> None:
        _, grid = output
        height, width = int(grid[0]), int(grid[1])
        self.grids[height * width] = (height, width)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() == 4:
            return tokens
        if tokens.dim() != 3:
            raise ValueError(
                f'Expected MViT tokens of shape (B, N, C), got '
                f'{tuple(tokens.shape)}; choose a block, norm or MLP layer.')
        batch, count, channels = tokens.shape
        if count not in self.grids:
            raise ValueError(
                f'No MViT block produced {count} tokens (seen grids: '
                f'{sorted(self.grids.values())}); the layer output is not a '
                'token grid.')
        height, width = self.grids[count]
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)

    def remove(self) -> None:
        """Remove the forward hooks from the backbone."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


class _TokenTap(nn.Identity):
    """Identity that exposes the token tensor of an MViT block to hooks."""


def _tap_block_tokens(block: nn.Module) -> Tuple[nn.Module, Callable]:
    """Route a ``MultiScaleBlock``'s tokens through an identity module.

    A block returns ``(tokens, grid)``, a tuple that pytorch-grad-cam cannot
    hook. A forward hook passes the tokens through a ``_TokenTap`` whose
    output is a plain tensor; the tap is then the Grad-CAM layer.
    """
    tap = _TokenTap()

    def hook(module, inputs, output):
        tokens, grid = output
        return tap(tokens), grid

    handle = block.register_forward_hook(hook)
    return tap, handle.remove


# Step 3: the explainer.


class _LogitModel(nn.Module):
    """Wrap an ``ImageClassifier`` so that ``forward`` returns the logits."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.classifier(inputs, mode='tensor')


class CAMExplainer:
    """Grad-CAM maps of an MMPreTrain classifier on lesion crops.

    Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
    Networks via Gradient-based Localization", ICCV 2017) weights the feature
    maps of a layer by the mean gradient of the class score and keeps the
    positive part. Grad-CAM++ (Chattopadhyay et al., WACV 2018) weights by
    higher-order gradients. Both come from pytorch-grad-cam.

    NOTE: pytorch-grad-cam hooks the target layer's output, which must be a
    tensor. MViT blocks return a tuple and are handled here, but other
    layers that return tuples (such as ``MultiScaleAttention``) fail inside
    pytorch-grad-cam.

    Args:
        model: An ``ImageClassifier``. ``mmpretrain.apis.init_model``, which
            :meth:`from_config` calls, stores the config as ``_config``.
        test_pipeline: The test pipeline as a list of transform configs.
            Defaults to ``model._config.test_dataloader.dataset.pipeline``.
        target_layer: Dotted layer name (see :func:`resolve_layer`).
            Defaults to :func:`default_target_layer_name`.
        method: ``'gradcam'`` or ``'gradcam++'``.

    Examples:
        >>> explainer = CAMExplainer.from_config(
        ...     'configs/stbsm/resnet34_stbsm.py', 'epoch_200.pth')  # doctest: +SKIP
        >>> result = explainer.explain('crops/100_t2_ivd3.png')  # doctest: +SKIP
        >>> result['cam'].shape == result['image'].shape[:2]  # doctest: +SKIP
        True
    """

    def __init__(self,
                 model: nn.Module,
                 test_pipeline: Optional[Sequence[dict]] = None,
                 target_layer: Optional[str] = None,
                 method: str = 'gradcam') -> None:
        from mmengine.dataset import Compose
        from mmengine.registry import init_default_scope
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

        if method not in METHODS:
            raise ValueError(f'method={method!r} is not supported; use one '
                             f'of {", ".join(METHODS)}.')
        if test_pipeline is None:
            cfg = getattr(model, '_config', None)
            if cfg is None:
                raise ValueError(
                    'The model has no _config attribute; pass test_pipeline '
                    '(the config\'s test_dataloader.dataset.pipeline).')
            test_pipeline = cfg.test_dataloader.dataset.pipeline
        self.logger = MMLogger.get_current_instance()
        self.model = model.eval()

        # The test pipeline, with and without its image loader.
        init_default_scope('mmpretrain')
        pipeline = [dict(step) for step in test_pipeline]
        self.pads_to_square = any(
            step.get('pad_to_square', False) for step in pipeline)
        self.pipeline = Compose(pipeline)
        self.array_pipeline = Compose([
            step for step in pipeline
            if step.get('type') != 'LoadImageFromFile'
        ])

        # The target layer; MViT tokens need a reshape to a feature grid.
        self.target_layer = target_layer or default_target_layer_name(model)
        layer = resolve_layer(model, self.target_layer)
        reshape_transform = None
        self._cleanups: List[Callable] = []
        if type(model.backbone).__name__ == 'MViT':
            tracker = TokenGridTracker(model.backbone)
            self._cleanups.append(tracker.remove)
            reshape_transform = tracker
            if type(layer).__name__ == 'MultiScaleBlock':
                layer, remove = _tap_block_tokens(layer)
                self._cleanups.append(remove)

        cam_class = GradCAM if method == 'gradcam' else GradCAMPlusPlus
        self.method = method
        self.cam = cam_class(_LogitModel(model), [layer],
                             reshape_transform=reshape_transform)

    @classmethod
    def from_config(cls,
                    config: Union[PathLike, 'Config'],
                    checkpoint: Optional[PathLike] = None,
                    device: str = 'cpu',
                    cfg_options: Optional[dict] = None,
                    **kwargs) -> 'CAMExplainer':
        """Build the model from a config and load a checkpoint.

        Args:
            config: Config file or ``mmengine.Config``.
            checkpoint: Checkpoint file; ``None`` keeps a random
                initialisation (the model's ``init_weights``). Files recorded in ``checkpoint_sha256.json``
                beside them load fully, others with ``weights_only=True``.
            device: Torch device of the model.
            cfg_options: Overrides merged into the config.
            **kwargs: ``target_layer`` and ``method`` of the explainer.

        Returns:
            CAMExplainer: The explainer.

        Examples:
            >>> CAMExplainer.from_config('configs/stbsm/mvitv2_stbsm.py')  # doctest: +SKIP
        """
        import stbsm_mm  # noqa: F401  (registers modules and the loader)
        from mmengine.config import Config
        from mmpretrain.apis import init_model

        if not isinstance(config, Config):
            if not Path(config).is_file():
                raise ValueError(f'config={str(config)!r} not found; pass a '
                                 'file under configs/stbsm/.')
            config = Config.fromfile(str(config))
        if cfg_options:
            config.merge_from_dict(cfg_options)
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise ValueError(f'checkpoint={str(checkpoint)!r} not found; pass '
                             'a .pth file written by tools/train.py.')
        model = init_model(config, None if checkpoint is None else
                           str(checkpoint), device=device)
        if checkpoint is None:
            # With PyTorch's default initialisation, ResNet-101's last
            # feature maps came out nearly uniform and its maps flat.
            model.init_weights()
        return cls(model, **kwargs)

    def explain(self,
                image: Union[PathLike, np.ndarray],
                target_class: Optional[int] = None) -> dict:
        """Compute the class activation map of one crop.

        Args:
            image: Crop file (read as the test pipeline reads it) or an
                array, ``H x W`` grayscale or ``H x W x 3`` BGR, uint8.
            target_class: Class index whose score is explained. Defaults to
                the predicted class.

        Returns:
            dict: ``cam`` is a float32 ``H x W`` map on the crop's pixel
            grid. Its maximum inside the crop is 1, and it is all zeros when
            the class has no positive evidence at the layer. ``scores`` (softmax scores, one per class),
            ``target_class`` (int) and ``image`` (the crop as uint8: gray
            when read from a file, else the array passed in).

        Examples:
            >>> result = explainer.explain(crop, target_class=0)  # doctest: +SKIP
        """
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        # Run the test pipeline and the data preprocessor.
        results = self._load(image)
        data = self.model.data_preprocessor(
            dict(inputs=[results['inputs']],
                 data_samples=[results['data_samples']]), False)
        inputs = data['inputs']

        # The map on the network input and the scores of the same forward
        # pass. Without a target, pytorch-grad-cam explains the top class.
        num_classes = getattr(self.model.head, 'num_classes', None)
        if target_class is not None and num_classes is not None and not (
                0 <= int(target_class) < num_classes):
            raise ValueError(f'target_class={target_class} is outside the '
                             f'model\'s {num_classes} classes; pass 0 to '
                             f'{num_classes - 1} or None.')
        targets = None
        if target_class is not None:
            targets = [ClassifierOutputTarget(int(target_class))]
        grayscale_cam = self.cam(input_tensor=inputs, targets=targets)[0]
        logits = self.cam.outputs.detach()
        scores = torch.softmax(logits, dim=1)[0].cpu().numpy()
        if target_class is None:
            target_class = int(scores.argmax())
        target_class = int(target_class)

        # The map on the crop's pixel grid.
        original_shape = tuple(results['data_samples'].ori_shape)
        cam = self._to_crop_grid(grayscale_cam, original_shape)
        if float(cam.max()) <= 0.0:
            self.logger.warning(
                f'The Grad-CAM map of class {target_class} at '
                f'{self.target_layer} is zero everywhere: no positive '
                'evidence for this class at this layer.')
        original = self._original_image(image)
        return dict(cam=cam, scores=scores, target_class=target_class,
                    image=original)

    def close(self) -> None:
        """Remove the hooks that the explainer added to the model."""
        self.cam.activations_and_grads.release()
        for cleanup in self._cleanups:
            cleanup()
        self._cleanups = []

    def _load(self, image: Union[PathLike, np.ndarray]) -> dict:
        if isinstance(image, np.ndarray):
            array = image
            if array.ndim == 2:
                array = np.repeat(array[:, :, None], 3, axis=2)
            if array.ndim != 3 or array.shape[2] != 3:
                raise ValueError(
                    f'image has shape {image.shape}; pass an H x W grayscale '
                    'or H x W x 3 array.')
            array = np.ascontiguousarray(array)
            return self.array_pipeline(
                dict(img=array, img_shape=array.shape[:2],
                     ori_shape=array.shape[:2]))
        if not Path(image).is_file():
            raise ValueError(f'image={str(image)!r} not found; pass a crop '
                             'PNG or an array.')
        return self.pipeline(dict(img_path=str(image)))

    def _to_crop_grid(self, cam: np.ndarray,
                      original_shape: Tuple[int, int]) -> np.ndarray:
        """Undo the resize and the bottom/right padding of the pipeline."""
        height, width = original_shape
        if self.pads_to_square:
            side = max(height, width)
            square = cv2.resize(cam, (side, side),
                                interpolation=cv2.INTER_LINEAR)
            cam = square[:height, :width]
        else:
            cam = cv2.resize(cam, (width, height),
                             interpolation=cv2.INTER_LINEAR)
        # The padding lies outside the crop, so the map is rescaled to the
        # maximum inside the crop.
        cam = np.clip(cam, 0.0, None)
        peak = float(cam.max())
        if peak > 0.0:
            cam = cam / peak
        return cam.astype(np.float32)

    @staticmethod
    def _original_image(image: Union[PathLike, np.ndarray]) -> np.ndarray:
        if isinstance(image, np.ndarray):
            return image.astype(np.uint8)
        # The pipeline has read this file already, so it is a valid image.
        return cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)


# Step 4: overlays.


def overlay(crop: np.ndarray,
            cam: np.ndarray,
            alpha: float = 0.4,
            colormap: str = 'jet') -> np.ndarray:
    """Blend a class activation map over a crop.

    Args:
        crop: ``H x W`` uint8 grayscale crop (``H x W x 3`` is accepted and
            converted to gray).
        cam: ``H x W`` float map in [0, 1] of the same size.
        alpha: Weight of the colour map, in [0, 1].
        colormap: Name of a matplotlib colour map.

    Returns:
        np.ndarray: ``H x W x 3`` RGB uint8 image.

    Examples:
        >>> import numpy as np
        >>> overlay(np.zeros((4, 6), np.uint8), np.ones((4, 6))).shape
        (4, 6, 3)
    """
    from matplotlib import colormaps

    gray = _as_gray(crop, 'crop')
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != gray.shape:
        raise ValueError(f'cam has shape {cam.shape} but crop has '
                         f'{gray.shape}; resize the map to the crop first.')
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha={alpha} is outside [0, 1].')
    if colormap not in colormaps:
        raise ValueError(f'colormap={colormap!r} is not a matplotlib colour '
                         'map; use e.g. jet, turbo or inferno.')
    heat = colormaps[colormap](np.clip(cam, 0.0, 1.0))[..., :3]
    base = np.repeat(gray[..., None], 3, axis=2).astype(np.float32) / 255.0
    blended = (1.0 - alpha) * base + alpha * heat
    return np.clip(np.round(blended * 255.0), 0, 255).astype(np.uint8)


def place_on_slice(slice_image: np.ndarray,
                   cam: np.ndarray,
                   box: Sequence[int],
                   alpha: float = 0.4,
                   colormap: str = 'jet') -> np.ndarray:
    """Overlay a crop's activation map at the crop's place on its slice.

    Args:
        slice_image: ``H x W`` uint8 grayscale slice.
        cam: Map on the crop's grid. Crops were resampled to square pixels,
            so the map is resized to the box size on the slice.
        box: ``(x0, y0, x1, y1)`` of the crop on the slice in pixels,
            ``x1`` and ``y1`` exclusive (``box`` in ``manifest.json``).
        alpha: Weight of the colour map inside the box.
        colormap: Name of a matplotlib colour map.

    Returns:
        np.ndarray: ``H x W x 3`` RGB uint8 slice, overlaid inside the box.

    Examples:
        >>> import numpy as np
        >>> place_on_slice(np.zeros((50, 40), np.uint8), np.ones((8, 8)),
        ...                (5, 10, 15, 30)).shape
        (50, 40, 3)
    """
    gray = _as_gray(slice_image, 'slice_image')
    height, width = gray.shape
    if len(box) != 4:
        raise ValueError(f'box={box} needs four values (x0, y0, x1, y1).')
    x0, y0, x1, y1 = (int(value) for value in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f'box={tuple(box)} is empty or outside the '
                         f'{width}x{height} slice.')
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f'cam has shape {cam.shape}; pass an H x W map.')

    resized = cv2.resize(cam, (x1 - x0, y1 - y0),
                         interpolation=cv2.INTER_LINEAR)
    result = np.repeat(gray[..., None], 3, axis=2)
    result[y0:y1, x0:x1] = overlay(gray[y0:y1, x0:x1], resized, alpha,
                                   colormap)
    return result


def to_square_pixels(image: np.ndarray,
                     spacing: Sequence[float]) -> np.ndarray:
    """Resize a slice image so that its pixels are square on display.

    The axis with the coarser spacing is upsampled to the finer spacing
    (bilinear), so the image keeps the larger pixel count and shows the
    anatomy in its true proportions.

    Args:
        image: ``H x W`` or ``H x W x C`` image on the slice's pixel grid.
        spacing: ``(x, y)`` pixel spacing in mm, in SimpleITK order
            (column spacing first).

    Returns:
        np.ndarray: The resized image, or ``image`` itself when the spacing
        is already square.

    Examples:
        >>> import numpy as np
        >>> to_square_pixels(np.zeros((10, 20), np.uint8), (0.5, 1.0)).shape
        (20, 20)
    """
    values = [float(value) for value in spacing]
    if len(values) != 2 or not all(
            np.isfinite(value) and value > 0 for value in values):
        raise ValueError(f'spacing={tuple(spacing)} is not two positive '
                         'numbers; pass the (x, y) pixel spacing in mm.')
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f'image has shape {image.shape}; pass an H x W or '
                         'H x W x C image.')

    spacing_x, spacing_y = values
    finest = min(spacing_x, spacing_y)
    height, width = image.shape[:2]
    new_width = max(1, round(width * spacing_x / finest))
    new_height = max(1, round(height * spacing_y / finest))
    if (new_width, new_height) == (width, height):
        return image
    return cv2.resize(image, (new_width, new_height),
                      interpolation=cv2.INTER_LINEAR)


def _as_gray(image: np.ndarray, argument: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f'{argument} has shape {image.shape} and dtype '
                         f'{image.dtype}; pass an H x W uint8 image.')
    return image
