# The study's schedule: AdamW, learning rate 0.0125, batch size 32 (set in the
# dataloaders), 200 epochs. The tools rescale the schedulers' epochs when
# train_cfg.max_epochs differs from schedule_epochs (see
# stbsm_mm.engine.fit_schedule_to_max_epochs).
schedule_epochs = 200

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=0.0125, weight_decay=0.05),
    # 0.0125 is a high learning rate for AdamW; clipping keeps early steps of
    # randomly initialised backbones finite.
    clip_grad=dict(max_norm=5.0),
)

param_scheduler = [
    # Linear warm-up over the first 5% of the epochs, updated every step.
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=10,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=10,
        end=200,
        convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=schedule_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# The study's batch size; enable to scale the learning rate linearly with
# the total batch size of a multi-process run.
auto_scale_lr = dict(base_batch_size=32, enable=False)
