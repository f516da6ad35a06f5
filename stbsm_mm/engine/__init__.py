"""Runner, safe checkpoint loading, pretrained weights, distributed set-up
and config helpers."""
from .checkpoint import (TRUST_RECORD, UntrustedCheckpointError,
                         is_trusted_checkpoint, load_checkpoint_file,
                         prune_trust_record, record_trusted_checkpoint)
from .config import (fit_schedule_to_max_epochs, prepare_run_config,
                     set_evaluator_output, sync_data_root)
from .dist import setup_distributed
from .pretrained import (PretrainedSource, apply_pretrained, backbone_prefix,
                         download_zoo_weights, resolve_pretrained,
                         resolve_zoo_url)
from .runner import STBSMRunner

__all__ = [
    'PretrainedSource', 'STBSMRunner', 'TRUST_RECORD',
    'UntrustedCheckpointError', 'apply_pretrained', 'backbone_prefix',
    'download_zoo_weights', 'fit_schedule_to_max_epochs', 'is_trusted_checkpoint',
    'load_checkpoint_file', 'prepare_run_config', 'prune_trust_record',
    'record_trusted_checkpoint', 'resolve_pretrained', 'resolve_zoo_url',
    'set_evaluator_output', 'setup_distributed', 'sync_data_root'
]
