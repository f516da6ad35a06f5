"""Train one stbsm-mm config with MMEngine's Runner.

Examples:
    python tools/train.py configs/stbsm/resnet34_stbsm.py \
        --cfg-options data_root=data/spider_prepared train_cfg.max_epochs=2
    python tools/train.py configs/stbsm/resnet34_stbsm.py --pretrained zoo \
        --cfg-options data_root=data/spider_prepared
    bash tools/dist_train.sh configs/stbsm/resnet34_stbsm.py 2
"""
import argparse
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction


def parse_args():
    parser = argparse.ArgumentParser(
        description='Train a classifier of T2-weighted lesion crops.')
    parser.add_argument('config', help='config file, e.g. '
                        'configs/stbsm/resnet34_stbsm.py')
    parser.add_argument(
        '--work-dir',
        help='folder for checkpoints, logs and predictions (default: '
        'work_dirs/<config name>)')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or, without a value, from '
        'the latest checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        nargs='?',
        const='fp16',
        choices=['fp16', 'bf16'],
        help='train with automatic mixed precision on a GPU: fp16 (the '
        'default without a value) or bf16; sets the config\'s amp')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='skip validation during training')
    parser.add_argument(
        '--pretrained',
        metavar='PATH|zoo|none',
        help='backbone weights to start from: a local checkpoint (a whole '
        'classifier or a bare backbone; the head is never loaded), "zoo" '
        'for the ImageNet weights of the config\'s pretrained_zoo_model '
        '(downloaded from the MMPreTrain model zoo), an MMPreTrain model '
        'name, or "none" (default: the config\'s pretrained setting)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value, e.g. data_root=DIR '
        'train_cfg.max_epochs=2 train_dataloader.batch_size=8')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm'],
        default='none',
        help='job launcher for multi-process training')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args) -> Config:
    from stbsm_mm.engine import prepare_run_config, setup_distributed

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    if args.amp:
        # apply_speed_options turns it into MMEngine's AmpOptimWrapper.
        cfg.amp = args.amp

    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        cfg.default_hooks.checkpoint.save_best = None

    try:
        prepare_run_config(cfg)
    except ValueError as error:
        # An invalid setting in the config, e.g. --amp without a CUDA GPU.
        raise SystemExit(f'error: {error}')
    setup_distributed(cfg, args.launcher)
    return cfg


def check_prepared_data(cfg: Config) -> None:
    """Exit with one line when a split's annotation file is missing."""
    for name in ('train_dataloader', 'val_dataloader'):
        dataset = (cfg.get(name) or {}).get('dataset')
        while isinstance(dataset, dict) and 'dataset' in dataset:
            dataset = dataset['dataset']
        if not isinstance(dataset, dict) or 'split' not in dataset:
            continue
        annotation = osp.join(dataset['data_root'], 'annotations',
                              f'{dataset["split"]}.json')
        if not osp.isfile(annotation):
            raise SystemExit(
                f'error: {annotation} not found. Prepare the data first '
                '(python tools/prepare_data.py COHORT_DIR DATA_ROOT) and pass '
                '--cfg-options data_root=DATA_ROOT.')


def set_pretrained(cfg: Config, request) -> Optional[dict]:
    """Point the backbone at pretrained weights, or exit if invalid."""
    from stbsm_mm.engine import UntrustedCheckpointError, apply_pretrained

    try:
        return apply_pretrained(cfg, request)
    except (FileNotFoundError, ValueError, UntrustedCheckpointError) as error:
        raise SystemExit(f'error: {error}')


def main():
    args = parse_args()
    import stbsm_mm  # noqa: F401  (registers modules and the loader)
    from stbsm_mm.engine import STBSMRunner
    from stbsm_mm.engine.provenance import write_run_record

    cfg = build_config(args)
    check_prepared_data(cfg)
    pretrained = set_pretrained(cfg, args.pretrained)
    runner = STBSMRunner.from_cfg(cfg)
    backend = cfg.env_cfg.dist_cfg.get('backend') if runner.distributed \
        else 'none'
    runner.logger.info(f'Training with {runner.world_size} process(es), '
                       f'distributed backend: {backend}.')
    if pretrained:
        runner.logger.info(
            f'Pretrained backbone weights: {pretrained["checkpoint"]} '
            f'(SHA-256 {pretrained["sha256"]}'
            + (f', from {pretrained["url"]}' if pretrained['url'] else '')
            + ').')
    runner.train()
    if runner.rank == 0:
        write_run_record(osp.join(cfg.work_dir, 'train_run.json'), cfg,
                         'train_dataloader',
                         world_size=runner.world_size,
                         pretrained=pretrained)


if __name__ == '__main__':
    main()
