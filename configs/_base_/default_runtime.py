default_scope = 'mmpretrain'
custom_imports = dict(imports=['stbsm_mm'], allow_failed_imports=False)

# Writes checkpoints atomically and records their SHA-256 so that they load
# under PyTorch's weights-only default (stbsm_mm.engine).
runner_type = 'STBSMRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        interval=10,
        max_keep_ckpts=2,
        save_last=True,
        save_best='diagnosis/accuracy',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_level = 'INFO'
# Backbone weights to start training from: None, a local checkpoint, 'zoo'
# (the ImageNet weights named by pretrained_zoo_model, downloaded on request)
# or an MMPreTrain model name. tools/train.py turns it into
# model.backbone.init_cfg (stbsm_mm.engine.apply_pretrained); only backbone
# weights are loaded, never the head.
pretrained = None
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)

# Speed settings (stbsm_mm.engine.speed): mixed precision and channels-last
# weights need a CUDA GPU; auto_workers raises the training dataloader's
# workers on a CUDA machine. flush_denormal makes CPU arithmetic flush
# subnormal floats to zero, which speeds up CPU training.
# retain_freed_memory lets glibc's malloc keep freed memory for the next
# training step instead of returning it to the system, which made a CPU
# step of MViTv2 about a quarter faster (stbsm_mm.engine.speed).
amp = None
channels_last = False
pin_memory = None
auto_workers = True
flush_denormal = True
retain_freed_memory = True
