"""Initialise a config's backbone from pretrained weights before training.

The ``pretrained`` setting of a config (or ``--pretrained`` of
``tools/train.py`` and ``tools/cross_validate.py``) is one of:

* ``None`` or ``'none'``: no pretrained weights, so the backbone keeps
  MMPreTrain's random initialisation.
* a local checkpoint path: a whole classifier (keys ``backbone.*``,
  ``head.*``, as MMPreTrain and stbsm-mm save them) or a bare backbone
  state_dict. The file is read through
  :func:`~stbsm_mm.engine.load_checkpoint_file`, so a file whose SHA-256 is
  not in its folder's trust record is loaded as tensors only.
* ``'zoo'``: the ImageNet weights of the config's backbone in the
  MMPreTrain model zoo, named by the config's ``pretrained_zoo_model``.
* a model name from MMPreTrain's model index (``mmpretrain.list_models()``),
  such as ``'resnet34_8xb32_in1k'``.

Only backbone weights are taken. The classification head has two classes
instead of ImageNet's 1000, so it keeps its fresh initialisation. The necks
of the four stbsm configs (global average pooling, or none for MViTv2) have
no weights. The weights are loaded by MMEngine's ``PretrainedInit`` through
``model.backbone.init_cfg``, which logs missing and unexpected keys.
"""
import os.path as osp
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

from mmengine.config import Config
from mmengine.logging import MMLogger

from ..utils.fileio import sha256_of_file
from .checkpoint import load_checkpoint_file

ZOO = 'zoo'
NO_PRETRAINED = 'none'
BACKBONE_PREFIX = 'backbone.'

# OpenMMLab names its weight files ``<name>_<date>-<first 8 hex digits of the
# SHA-256>.pth``.
_HASH_SUFFIX = re.compile(r'-([a-f0-9]{8,})\.pth$')


@dataclass
class PretrainedSource:
    """Source of a run's backbone weights.

    Attributes:
        request: The setting as given (path, ``'zoo'`` or model name).
        checkpoint: Local file the weights are read from. For a zoo model it
            is the download's place in the torch hub cache, which may not
            exist yet.
        url: Download URL of a zoo model, else ``None``.
        zoo_model: MMPreTrain model name of a zoo request, else ``None``.
    """

    request: str
    checkpoint: str
    url: Optional[str] = None
    zoo_model: Optional[str] = None


def resolve_zoo_url(model_name: str,
                    backbone: Optional[dict] = None) -> str:
    """Return the weight URL of a model in MMPreTrain's model index.

    The URL is read from the metafile that MMPreTrain installs with its
    model index (``mmpretrain/.mim/model-index.yml``). Nothing is downloaded.

    Args:
        model_name: A name from ``mmpretrain.list_models()``, e.g.
            ``'resnet34_8xb32_in1k'``.
        backbone: The backbone config the weights are meant for. When given,
            the zoo model's backbone must have the same type and depth or
            arch.

    Returns:
        The URL of the model's ``.pth`` file.

    Raises:
        ValueError: The name is not in the model index, has no weights, or
            its backbone differs from ``backbone``.

    Examples:
        >>> resolve_zoo_url('resnet34_8xb32_in1k')  # doctest: +ELLIPSIS
        'https://download.openmmlab.com/.../resnet34_8xb32_in1k_...pth'
    """
    from mmpretrain.apis import ModelHub

    try:
        metainfo = ModelHub.get(model_name)
    except ValueError as error:
        raise ValueError(
            f'pretrained={model_name!r} is neither an existing file nor a '
            'model name in MMPreTrain\'s model index. Pass a checkpoint '
            'path, "zoo", "none", or a name from mmpretrain.list_models().'
        ) from error
    if not metainfo.weights:
        raise ValueError(f'The MMPreTrain model {model_name!r} lists no '
                         'weights. Choose another model name.')

    if backbone is not None:
        zoo_backbone = metainfo.config.model.backbone
        for key in ('type', 'depth', 'arch'):
            if zoo_backbone.get(key) != backbone.get(key):
                raise ValueError(
                    f'The MMPreTrain model {model_name!r} has a '
                    f'{_describe(zoo_backbone)} backbone, but the config '
                    f'has {_describe(backbone)}. Choose weights of the '
                    'config\'s backbone.')
    return metainfo.weights


def resolve_pretrained(request: Optional[str],
                       zoo_model: Optional[str] = None,
                       backbone: Optional[dict] = None
                       ) -> Optional[PretrainedSource]:
    """Classify a ``pretrained`` setting and find its file or URL.

    ``'zoo'`` stands for ``zoo_model``. Otherwise, a request that names an
    existing file is a local checkpoint, and a request that looks like a
    path (it ends in ``.pth``, ``.pt`` or ``.ckpt`` or contains a path
    separator) but names no file raises ``FileNotFoundError``. Anything else
    is a zoo model name. Nothing is downloaded.

    Args:
        request: ``None``, ``'none'``, a checkpoint path, ``'zoo'`` or an
            MMPreTrain model name.
        zoo_model: The model name that ``'zoo'`` stands for (the config's
            ``pretrained_zoo_model``).
        backbone: The config's backbone, checked against a zoo model's.

    Returns:
        The source, or ``None`` for no pretrained weights.

    Raises:
        FileNotFoundError: A path names no file.
        ValueError: ``'zoo'`` without ``zoo_model``, or an unknown or
            mismatched model name.

    Examples:
        >>> resolve_pretrained('none') is None
        True
        >>> resolve_pretrained('zoo', 'resnet34_8xb32_in1k').url
        ...     # doctest: +ELLIPSIS
        'https://download.openmmlab.com/...'
    """
    if request is None or str(request).strip().lower() in ('', NO_PRETRAINED):
        return None
    request = str(request)

    if request.lower() == ZOO:
        if not zoo_model:
            raise ValueError(
                'pretrained="zoo" needs pretrained_zoo_model in the config '
                '(an MMPreTrain model name). Set it, or pass a model name '
                'from mmpretrain.list_models() instead of "zoo".')
        name = zoo_model
    else:
        path = Path(osp.expanduser(request))
        if path.is_file():
            return PretrainedSource(request=request,
                                    checkpoint=str(path.resolve()))
        if path.suffix in ('.pth', '.pt', '.ckpt') or osp.sep in request:
            raise FileNotFoundError(
                f'pretrained checkpoint {request} not found. Check the path, '
                'or pass --pretrained none to train from random weights.')
        name = request
    url = resolve_zoo_url(name, backbone)
    return PretrainedSource(request=request, checkpoint=_cache_path(url),
                            url=url, zoo_model=name)


def download_zoo_weights(source: PretrainedSource) -> str:
    """Download a zoo model's weights into the torch hub cache.

    A file already in the cache is reused. The download is checked against
    the SHA-256 prefix in the file name.

    Args:
        source: A zoo source from :func:`resolve_pretrained`.

    Returns:
        The local path of the weights.

    Raises:
        ValueError: ``source`` is not a zoo source.
        RuntimeError: The download's SHA-256 does not match its name.
    """
    import torch.hub

    if source.url is None:
        raise ValueError(f'{source.request!r} is not a zoo model; only zoo '
                         'weights are downloaded.')

    logger = MMLogger.get_current_instance()
    expected = _HASH_SUFFIX.search(source.url)
    if osp.isfile(source.checkpoint):
        logger.info(f'Using the cached ImageNet weights of '
                    f'{source.zoo_model}: {source.checkpoint}')
    else:
        logger.info(f'Downloading the ImageNet weights of {source.zoo_model} '
                    f'from {source.url} to {source.checkpoint}')
        Path(source.checkpoint).parent.mkdir(parents=True, exist_ok=True)
        # NOTE: in distributed training every process downloads the file
        # when it is not cached yet. Each download goes to its own temporary
        # file that is then renamed, so the copies do not mix.
        torch.hub.download_url_to_file(
            source.url, source.checkpoint,
            hash_prefix=expected.group(1) if expected else None)

    if expected and not sha256_of_file(source.checkpoint).startswith(
            expected.group(1)):
        raise RuntimeError(
            f'{source.checkpoint}: SHA-256 does not start with '
            f'{expected.group(1)} as its name says. Delete the file and run '
            'again to download it anew.')
    return source.checkpoint


def backbone_prefix(checkpoint: Union[str, Path]) -> Optional[str]:
    """Return ``'backbone.'`` if a checkpoint stores a whole classifier.

    Args:
        checkpoint: A local checkpoint: a state_dict, or a dict with the
            state_dict under ``'state_dict'``.

    Returns:
        ``'backbone.'`` when some key starts with it, ``None`` for a bare
        backbone.

    Raises:
        ValueError: The file contains no tensors by name.
        UntrustedCheckpointError: The file is not recorded as trusted and
            contains objects that weights-only loading rejects.
    """
    return _prefix_of(_state_dict(checkpoint))


def apply_pretrained(cfg: Config,
                     request: Optional[str] = None) -> Optional[dict]:
    """Point ``cfg.model.backbone.init_cfg`` at pretrained weights.

    The setting is ``request`` when given, else ``cfg.pretrained``. A zoo
    model is downloaded here (the log names the URL). The checkpoint is then
    read once to choose the key prefix and to check that its tensors match
    the backbone, so that a wrong file fails before training starts.

    Args:
        cfg: A training config; ``cfg.pretrained`` is set to the request.
        request: Overrides ``cfg.pretrained`` (``--pretrained``).

    Returns:
        A record for ``train_run.json`` (``request``, ``checkpoint``,
        ``sha256``, ``url``, ``zoo_model``, ``prefix``), or ``None`` when no
        pretrained weights are used.

    Raises:
        FileNotFoundError: A local checkpoint does not exist.
        ValueError: Unknown or mismatched model name, or a checkpoint whose
            tensors match none of the backbone's.
        UntrustedCheckpointError: The checkpoint needs full unpickling and
            is not recorded as trusted.

    Examples:
        >>> cfg = Config.fromfile('configs/stbsm/resnet34_stbsm.py')
        >>> apply_pretrained(cfg, 'resnet34_imagenet.pth')  # doctest: +SKIP
        >>> cfg.model.backbone.init_cfg.type  # doctest: +SKIP
        'Pretrained'
    """
    if request is None:
        request = cfg.get('pretrained')
    backbone = cfg.model.backbone
    source = resolve_pretrained(request, cfg.get('pretrained_zoo_model'),
                                backbone)
    cfg.pretrained = request
    if source is None:
        return None

    if source.url is not None:
        download_zoo_weights(source)
    state_dict = _state_dict(source.checkpoint)
    prefix = _prefix_of(state_dict)
    _check_backbone_keys(state_dict, prefix, backbone, source.checkpoint)

    # A single Pretrained dict, not a list, because MMPreTrain 1.2's ResNet
    # and MViT skip their own re-initialisation (zero residual norms,
    # truncated-normal position embeddings) only then. That step runs after
    # the loading and would overwrite the loaded weights.
    backbone.init_cfg = dict(type='Pretrained', checkpoint=source.checkpoint,
                             prefix=prefix)
    record = asdict(source)
    record.update(sha256=sha256_of_file(source.checkpoint), prefix=prefix)
    MMLogger.get_current_instance().info(
        f'Backbone initialised from {source.checkpoint} (SHA-256 '
        f'{record["sha256"]}, key prefix {prefix!r}). The head is not '
        'loaded.')
    return record


def _state_dict(checkpoint: Union[str, Path]) -> dict:
    loaded = load_checkpoint_file(checkpoint, map_location='cpu')
    if isinstance(loaded, dict) and isinstance(loaded.get('state_dict'),
                                               dict):
        loaded = loaded['state_dict']
    if not isinstance(loaded, dict) or not loaded:
        raise ValueError(
            f'{checkpoint}: expected a state_dict (a dict of tensors by '
            f'name, possibly under "state_dict"), got {type(loaded).__name__}.'
            ' Save the weights with torch.save(model.state_dict(), path).')
    return loaded


def _prefix_of(state_dict: dict) -> Optional[str]:
    if any(key.startswith(BACKBONE_PREFIX) for key in state_dict):
        return BACKBONE_PREFIX
    return None


def _check_backbone_keys(state_dict: dict, prefix: Optional[str],
                         backbone: dict, checkpoint: str) -> None:
    """Raise if no tensor of the checkpoint has a backbone parameter's name."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    if prefix:
        keys = {key[len(prefix):] for key in state_dict
                if key.startswith(prefix)}
    else:
        keys = set(state_dict)
    # MMEngine strips the ``module.`` prefix of DataParallel when loading.
    keys = {key[len('module.'):] if key.startswith('module.') else key
            for key in keys}

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        expected = set(MODELS.build(backbone).state_dict())
    if not keys & expected:
        raise ValueError(
            f'{checkpoint}: none of its {len(keys)} tensors matches a '
            f'parameter of the {_describe(backbone)} backbone (e.g. '
            f'{sorted(expected)[0]!r}). Pass weights of this backbone.')


def _cache_path(url: str) -> str:
    import torch.hub

    return osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(url))


def _describe(backbone: dict) -> str:
    details = [str(backbone.get(key)) for key in ('depth', 'arch')
               if backbone.get(key) is not None]
    return ' '.join([str(backbone.get('type'))] + details)
