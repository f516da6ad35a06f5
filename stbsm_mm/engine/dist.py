"""Multi-process training on CPU (gloo) as well as on GPUs (NCCL).

MMEngine 0.10.7 initialises ``torch.distributed`` itself, but its pytorch and
slurm launchers call ``torch.cuda.set_device`` first, which fails on a
machine without a GPU, and its default DistributedDataParallel wrapper pins
the model to ``device_ids=[LOCAL_RANK]``, which is wrong for a CPU model.
On a machine without CUDA this module starts the process group with the
gloo backend before the Runner is built (the Runner then skips its own
initialisation) and sets a CPU-friendly model wrapper. With CUDA it only
makes sure the backend is NCCL and leaves the rest to MMEngine.
"""
import os
import subprocess

import torch
import torch.distributed as torch_dist
from mmengine.config import Config

LAUNCHERS = ('none', 'pytorch', 'slurm')


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Prepare ``cfg`` (and, on CPU, the process group) for ``launcher``.

    Args:
        cfg: The run's config; ``env_cfg.dist_cfg`` and, on CPU,
            ``model_wrapper_cfg`` are updated in place.
        launcher: ``'none'``, ``'pytorch'`` (torchrun) or ``'slurm'``.

    Raises:
        ValueError: an unknown launcher.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher={launcher!r}; use one of {LAUNCHERS}.')
    cfg.launcher = launcher
    if launcher == 'none':
        return

    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if torch.cuda.is_available():
        dist_cfg['backend'] = dist_cfg.get('backend', 'nccl')
        return

    dist_cfg['backend'] = 'gloo'
    if launcher == 'slurm':
        _export_slurm_environment()
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False)
    # A CPU module takes no device ids.
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def _export_slurm_environment(default_port: int = 29500) -> None:
    """Set torch.distributed's env:// variables from Slurm's for CPU jobs."""
    node_list = os.environ['SLURM_NODELIST']
    first_host = subprocess.run(['scontrol', 'show', 'hostname', node_list],
                                check=True, capture_output=True,
                                text=True).stdout.split()[0]
    os.environ.setdefault('MASTER_ADDR', first_host)
    os.environ.setdefault('MASTER_PORT', str(default_port))
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
