_base_ = [
    'mmpretrain::_base_/models/mvit/mvitv2-small.py',
    '../_base_/datasets/t2_crops.py',
    '../_base_/schedules/adamw_200e.py',
    '../_base_/default_runtime.py',
]

# MMPreTrain's MViTv2 recipe mixes images in each batch (Mixup and CutMix).
# The study augmented with random affine transforms only, so the batch
# augments are removed. To restore them, set model.train_cfg.augments; the
# data preprocessor already has num_classes=2 for their one-hot labels.
model = dict(
    head=dict(num_classes=2, topk=(1, )),
    train_cfg=dict(_delete_=True),
)

# MMPreTrain's MViTv2 recipe keeps weight decay off normalisation layers,
# biases and position embeddings.
optim_wrapper = dict(
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            '.pos_embed': dict(decay_mult=0.0),
            '.rel_pos_h': dict(decay_mult=0.0),
            '.rel_pos_w': dict(decay_mult=0.0)
        }))

# MMPreTrain model whose ImageNet weights --pretrained zoo loads.
pretrained_zoo_model = 'mvitv2-small_3rdparty_in1k'
