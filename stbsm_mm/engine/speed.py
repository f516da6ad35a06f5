"""Speed settings of a run: mixed precision, channels-last, pinned memory.

Four top-level config variables, all off on the CPU by default:

* ``amp``: ``None``, ``'bf16'`` or ``'fp16'``. Trains with
  ``torch.autocast`` through MMEngine's ``AmpOptimWrapper``, which needs a
  CUDA (or NPU/MLU/MUSA) device.
* ``channels_last``: ``True`` stores the model's 4-D weights in the
  channels-last memory format, which tensor cores on recent NVIDIA GPUs
  run faster. :class:`~stbsm_mm.engine.STBSMRunner` converts the model
  before wrapping it for distributed training, so DDP registers the
  converted parameters.
* ``pin_memory``: ``True``, ``False`` or ``None`` (the default) for "when a
  CUDA device is present". Dataloaders that set ``pin_memory`` themselves
  keep their value.
* ``auto_workers``: ``True`` (the default) raises the training
  dataloader's ``num_workers`` on a CUDA machine to the CPU cores per
  process, at most 8, because a GPU trains faster than two workers can
  augment crops. CPU runs keep the config's value, as the workers and the
  model share the cores there.

:func:`retain_freed_memory` is applied by
:class:`~stbsm_mm.engine.STBSMRunner` unless the config sets
``retain_freed_memory = False``.
"""
import ctypes
import os
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

AMP_DTYPES = {'bf16': 'bfloat16', 'fp16': 'float16'}
MAX_AUTO_WORKERS = 8
DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
RETAIN_BELOW_BYTES = 1 << 30
_INT_MAX = 2**31 - 1


def retain_freed_memory(limit: int = RETAIN_BELOW_BYTES) -> bool:
    """Make glibc's malloc keep freed blocks for reuse by the process.

    By default glibc serves blocks above 32 MiB (or less, until its
    threshold has adapted) with ``mmap`` and unmaps them when they are
    freed, and it returns free memory at the top of its heap to the system.
    A CPU training step allocates and frees gigabytes of activations, so
    each step then faults the same memory in again, page by page. With
    blocks up to ``limit`` served from the heap and no trimming, the
    second and later steps reuse the pages. The process then keeps its
    peak memory until it exits, and the peak can be a little higher: 10.4
    instead of 10.0 GiB for MViTv2 training at batch 32 in
    ``tools/benchmark.py``.

    Args:
        limit: Blocks of this many bytes or more are still mapped
            separately (at most 2 GiB - 1).

    Returns:
        bool: whether the settings were applied; ``False`` on a C library
        other than glibc (macOS, Windows, musl), where nothing changes.

    Examples:
        >>> retain_freed_memory()  # doctest: +SKIP
        True
    """
    if not 0 < limit <= _INT_MAX:
        raise ValueError(f'invalid limit={limit}: use 1 to {_INT_MAX} '
                         'bytes.')
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  present in glibc only
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Setting either threshold turns off glibc's dynamic adjustment of
    # both, so both are set.
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)
                and mallopt(_M_TRIM_THRESHOLD, _INT_MAX))


def apply_speed_options(cfg: Config,
                        cuda_available: Optional[bool] = None) -> None:
    """Turn ``amp``, ``pin_memory`` and ``auto_workers`` into run settings.

    Args:
        cfg: The run's config; changed in place.
        cuda_available: Whether a CUDA device is present. ``None`` calls
            :func:`torch.cuda.is_available`.

    Raises:
        ValueError: ``amp`` is not ``None``, ``'bf16'`` or ``'fp16'``, the
            optimizer wrapper is not MMEngine's ``OptimWrapper``, or ``amp``
            is set on a machine without a CUDA device.

    Examples:
        >>> cfg = Config(dict(amp='bf16', optim_wrapper=dict(
        ...     optimizer=dict(type='AdamW', lr=1e-3))))
        >>> apply_speed_options(cfg, cuda_available=True)
        >>> cfg.optim_wrapper.type, cfg.optim_wrapper.dtype
        ('AmpOptimWrapper', 'bfloat16')
    """
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()

    amp = cfg.get('amp')
    if amp is not None:
        if amp not in AMP_DTYPES:
            raise ValueError(
                f'amp={amp!r} in the config is invalid; use None, '
                f"'bf16' or 'fp16'.")
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError(
                f'amp={amp!r} needs optim_wrapper type OptimWrapper, but the '
                f'config has {wrapper}. Remove amp or change the wrapper.')
        if not cuda_available:
            raise ValueError(
                f'amp={amp!r} needs a CUDA GPU, and none is available. '
                'Train on the CPU in fp32: leave out --amp, or set '
                'amp=None in the config.')
        cfg.optim_wrapper['type'] = 'AmpOptimWrapper'
        cfg.optim_wrapper['dtype'] = AMP_DTYPES[amp]

    pin_memory = cfg.get('pin_memory')
    if pin_memory is None:
        pin_memory = cuda_available
    for name in DATALOADERS:
        loader = cfg.get(name)
        if loader and 'pin_memory' not in loader:
            loader['pin_memory'] = bool(pin_memory)

    loader = cfg.get('train_dataloader')
    if cuda_available and cfg.get('auto_workers', True) and loader:
        per_process = (os.cpu_count() or 1) // int(
            os.environ.get('LOCAL_WORLD_SIZE', 1))
        workers = min(MAX_AUTO_WORKERS, max(1, per_process))
        if workers > loader.get('num_workers', 0):
            loader['num_workers'] = workers
            loader.setdefault('persistent_workers', True)

    if amp is not None or cfg.get('channels_last'):
        MMLogger.get_current_instance().info(
            f'Speed settings: amp={amp}, '
            f'channels_last={bool(cfg.get("channels_last"))}, '
            f'pin_memory={bool(pin_memory)}.')
