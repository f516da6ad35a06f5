"""Test a trained checkpoint and write metrics JSON and per-ROI predictions.

Examples:
    python tools/test.py configs/stbsm/resnet34_stbsm_external.py \
        work_dirs/resnet34_stbsm/epoch_2.pth \
        --cfg-options data_root=data/spider_prepared

Writes, under ``<work_dir>/<name>/`` (name defaults to the test split):
``predictions.csv`` (one row per ROI), ``metrics.json`` (every figure, the
positive class and the averaging used), ``summary.json`` and ``summary.md``
(image- and patient-level figures with 95% confidence intervals) and
``test_run.json`` (config, checkpoint and its SHA-256, seed, package
versions).
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction


def parse_args():
    parser = argparse.ArgumentParser(
        description='Test a trained classifier of T2-weighted lesion crops.')
    parser.add_argument('config', help='config file; *_external.py configs '
                        'test on the external sites')
    parser.add_argument('checkpoint', help='checkpoint file (.pth)')
    parser.add_argument(
        '--work-dir',
        help='folder for the outputs (default: the checkpoint\'s folder)')
    parser.add_argument(
        '--name',
        help='name of the output sub-folder (default: the test split)')
    parser.add_argument(
        '--aggregation',
        choices=['mean', 'max'],
        default='mean',
        help='how a patient\'s score is formed from its ROI scores for the '
        'patient-level figures (default: mean)')
    parser.add_argument(
        '--bootstrap',
        type=int,
        default=2000,
        help='bootstrap resamples of patients for the confidence intervals '
        'of AUC, F1 and macro figures (default: 2000)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value, e.g. data_root=DIR')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm'],
        default='none',
        help='job launcher for multi-process testing')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    import stbsm_mm  # noqa: F401  (registers modules and the loader)
    from stbsm_mm.engine import (STBSMRunner, prepare_run_config,
                                 set_evaluator_output, setup_distributed)
    from stbsm_mm.engine.provenance import write_test_record

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'error: checkpoint {args.checkpoint} not found.')
    cfg.work_dir = args.work_dir or osp.dirname(osp.abspath(args.checkpoint))
    cfg.load_from = args.checkpoint
    cfg.resume = False

    name = args.name or cfg.test_dataloader.dataset.get('split', 'test')
    output_dir = osp.join(cfg.work_dir, name)
    prepare_run_config(cfg)
    set_evaluator_output(cfg, 'test_evaluator', output_dir)
    setup_distributed(cfg, args.launcher)

    runner = STBSMRunner.from_cfg(cfg)
    metrics = runner.test()
    if runner.rank == 0:
        write_test_record(output_dir, cfg, args.checkpoint, metrics)
        table = write_summary(output_dir, cfg, args)
        runner.logger.info(f'Image- and patient-level figures:\n{table}')
        runner.logger.info(f'Metrics and predictions written to {output_dir}')


def write_summary(output_dir: str, cfg: Config, args) -> str:
    """Write summary.json and summary.md: both levels, with intervals."""
    import json

    from stbsm_mm.evaluation.summary import (read_patient_labels,
                                             summarize_predictions,
                                             summary_markdown)
    from stbsm_mm.utils import atomic_write_json, atomic_write_text

    figures = json.loads(
        open(osp.join(output_dir, 'metrics.json'), encoding='utf-8').read())
    summary = summarize_predictions(
        osp.join(output_dir, 'predictions.csv'),
        figures['classes'],
        figures['positive_class'],
        figures['threshold'],
        patient_labels=read_patient_labels(
            cfg.test_dataloader.dataset.data_root),
        aggregation=args.aggregation,
        n_resamples=args.bootstrap,
        seed=(cfg.get('randomness') or {}).get('seed') or 0)
    table = summary_markdown(summary)
    atomic_write_json(osp.join(output_dir, 'summary.json'), summary)
    atomic_write_text(osp.join(output_dir, 'summary.md'), table)
    return table


if __name__ == '__main__':
    main()
