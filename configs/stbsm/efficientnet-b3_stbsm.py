_base_ = [
    'mmpretrain::_base_/models/efficientnet_b3.py',
    '../_base_/datasets/t2_crops.py',
    '../_base_/schedules/adamw_200e.py',
    '../_base_/default_runtime.py',
]

# Two classes; top-5 accuracy is meaningless with two. The input stays at
# the study's 224 px rather than EfficientNet-B3's native 300 px.
model = dict(head=dict(num_classes=2, topk=(1, )))

# MMPreTrain model whose ImageNet weights --pretrained zoo loads.
pretrained_zoo_model = 'efficientnet-b3_3rdparty_8xb32_in1k'
