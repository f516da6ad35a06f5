# Lesion crops written by tools/prepare_data.py. Override the folder with
# --cfg-options data_root=DIR; the tools pass it on to every dataloader.
dataset_type = 'T2CropDataset'
data_root = 'data/stbsm_prepared'
input_size = 224
# The study enlarged its training set 20-fold by repeating it with fresh
# random affine augmentation (mmengine's RepeatDataset).
train_repeat_times = 20

# Two classes: index 0 = STB, 1 = SM (or the class names of the prepared
# dataset). Crops are 8-bit grayscale; LoadImageFromFile repeats the channel
# three times, so ImageNet statistics fit pretrained backbones.
data_preprocessor = dict(
    num_classes=2,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
)

meta_keys = ('sample_idx', 'img_path', 'ori_shape', 'img_shape', 'roi_id',
             'patient_id', 'site')

train_pipeline = [
    dict(type='LoadImageFromFile'),
    # Pad to a square, then resize: the lesion keeps its proportions.
    dict(type='mmcv.Pad', pad_to_square=True, pad_val=0),
    dict(type='Resize', scale=(input_size, input_size)),
    dict(
        type='RandomAffine',
        translate_ratio=(0.1, 0.1),
        translate_prob=0.5,
        max_rotate_degree=15.0,
        rotate_prob=0.5,
        flip_prob=0.5,
        flip_direction='horizontal',
        zoom_range=(0.9, 1.1),
        zoom_prob=0.5,
        scale_range=(0.9, 1.1),
        scale_prob=0.5),
    dict(type='PackInputs', meta_keys=meta_keys),
]

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmcv.Pad', pad_to_square=True, pad_val=0),
    dict(type='Resize', scale=(input_size, input_size)),
    dict(type='PackInputs', meta_keys=meta_keys),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='RepeatDataset',
        times=train_repeat_times,
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            split='train',
            pipeline=train_pipeline)),
)

val_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        pipeline=test_pipeline),
)
val_evaluator = dict(type='DiagnosisMetric', positive_class=0, threshold=0.5)

# Testing defaults to the internal validation split; the *_external.py
# configs test on the external sites.
test_dataloader = val_dataloader
test_evaluator = val_evaluator
