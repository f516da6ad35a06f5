_base_ = [
    'mmpretrain::_base_/models/resnet34.py',
    '../_base_/datasets/t2_crops.py',
    '../_base_/schedules/adamw_200e.py',
    '../_base_/default_runtime.py',
]

# Two classes; top-5 accuracy is meaningless with two.
model = dict(head=dict(num_classes=2, topk=(1, )))

# MMPreTrain model whose ImageNet weights --pretrained zoo loads.
pretrained_zoo_model = 'resnet34_8xb32_in1k'
