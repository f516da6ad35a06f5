# Test on the external sites (the patients of --external-sites in
# tools/prepare_data.py): python tools/test.py THIS_CONFIG CHECKPOINT
_base_ = './efficientnet-b3_stbsm.py'

test_dataloader = dict(dataset=dict(split='external'))
