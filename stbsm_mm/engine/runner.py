"""An MMEngine Runner that writes checkpoints atomically and records them."""
import os
import os.path as osp

import torch
from mmengine.dist import is_main_process
from mmengine.runner import Runner
from mmpretrain.registry import RUNNERS

from .checkpoint import prune_trust_record, record_trusted_checkpoint
from .speed import retain_freed_memory


@RUNNERS.register_module()
class STBSMRunner(Runner):
    """MMEngine's Runner, with safe checkpoint files.

    With ``channels_last = True`` in the config, the model is converted to
    the channels-last memory format before it is wrapped. Unless the
    config sets ``flush_denormal = False``, CPU arithmetic flushes
    subnormal floats to zero (:func:`torch.set_flush_denormal`). Unless
    it sets ``retain_freed_memory = False``, glibc's malloc keeps freed
    memory for reuse (:func:`~stbsm_mm.engine.speed.retain_freed_memory`),
    so that each CPU training step does not fault its activations in again.

    Each checkpoint is written to a temporary name and renamed into place,
    so a crash never leaves a truncated ``.pth``. Its SHA-256 is then
    recorded in ``checkpoint_sha256.json`` beside it, which lets
    :func:`stbsm_mm.engine.load_checkpoint_file` load it fully for resuming
    and testing while other files stay weights-only.

    Examples:
        >>> from mmengine.config import Config
        >>> cfg = Config.fromfile('configs/stbsm/resnet34_stbsm.py')  # doctest: +SKIP
        >>> runner = STBSMRunner.from_cfg(cfg)  # doctest: +SKIP
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.cfg.get('flush_denormal', True):
            # Arithmetic on subnormal floats is slow on x86 CPUs (see
            # docs/benchmarks.md for MViTv2). Only CPU arithmetic is
            # affected, and runs stay deterministic.
            torch.set_flush_denormal(True)
        if self.cfg.get('retain_freed_memory', True):
            # DataLoader workers forked later inherit the setting.
            if retain_freed_memory():
                self.logger.debug('glibc malloc keeps freed memory.')

    def wrap_model(self, model_wrapper_cfg, model):
        # Converting after DDP has registered the parameters would leave
        # its gradient buckets pointing at the old tensors.
        if self.cfg.get('channels_last'):
            model = model.to(memory_format=torch.channels_last)
            self.logger.info('Model converted to the channels-last format.')
        return super().wrap_model(model_wrapper_cfg, model)

    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs):
        tmp_name = f'.{filename}.tmp{os.getpid()}'
        super().save_checkpoint(out_dir, tmp_name, *args, **kwargs)
        if not is_main_process():
            return
        final_path = osp.join(out_dir, filename)
        os.replace(osp.join(out_dir, tmp_name), final_path)
        record_trusted_checkpoint(final_path)

    def train(self):
        model = super().train()
        # CheckpointHook deletes old checkpoints after the last save too.
        if is_main_process():
            prune_trust_record(self.work_dir)
        return model
