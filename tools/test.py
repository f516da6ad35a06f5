"""Test a trained checkpoint and write metrics JSON and per-ROI predictions.

Examples:
    python tools/test.py configs/stbsm/resnet34_stbsm_external.py \
        work_dirs/resnet34_stbsm/epoch_2.pth \
        --cfg-options data_root=data/spider_prepared

    # Pick the Youden threshold on the validation split, then apply it
    # unchanged to the external sites:
    python tools/test.py configs/stbsm/resnet34_stbsm.py \
        work_dirs/resnet34_stbsm/epoch_2.pth --threshold youden
    python tools/test.py configs/stbsm/resnet34_stbsm_external.py \
        work_dirs/resnet34_stbsm/epoch_2.pth \
        --threshold-file work_dirs/resnet34_stbsm/val/threshold.json

Writes, under ``<work_dir>/<name>/`` (name defaults to the test split):
``predictions.csv`` (one row per ROI), ``metrics.json`` (every figure, the
positive class, the threshold and the averaging used), ``summary.json`` and
``summary.md`` (image- and patient-level figures with 95% confidence
intervals, and calibration), ``test_run.json`` (config, checkpoint and its
SHA-256, seed, package versions) and, with ``--threshold youden``,
``threshold.json`` (the chosen threshold and where it came from).
"""
import argparse
import json
import os
import os.path as osp
from pathlib import Path

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
    threshold = parser.add_mutually_exclusive_group()
    threshold.add_argument(
        '--threshold',
        type=parse_threshold,
        help='decision threshold on the positive-class probability: a '
        'number in [0, 1], or "youden" to pick the one with the largest '
        'sensitivity + specificity - 1 on the tested split (meant for the '
        'validation split) and write it to threshold.json (default: the '
        'config\'s test_evaluator threshold, 0.5)')
    threshold.add_argument(
        '--threshold-file',
        help='threshold.json written by --threshold youden on another '
        'split; its threshold is applied unchanged')
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


def parse_threshold(value: str):
    """Return ``'youden'`` or the threshold as a float in [0, 1]."""
    if value == 'youden':
        return value
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is None or not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(
            f'invalid threshold {value!r}: give a number in [0, 1], e.g. '
            f'0.5, or youden')
    return number


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

    threshold_record = None
    if args.threshold_file:
        from stbsm_mm.evaluation import read_threshold_json
        try:
            threshold_record = read_threshold_json(args.threshold_file)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f'error: {error}')
        set_evaluator_threshold(cfg, threshold_record['threshold'])
    elif isinstance(args.threshold, float):
        set_evaluator_threshold(cfg, args.threshold)

    cfg.work_dir = args.work_dir or osp.dirname(osp.abspath(args.checkpoint))
    cfg.load_from = args.checkpoint
    cfg.resume = False

    split = cfg.test_dataloader.dataset.get('split', 'test')
    name = args.name or split
    output_dir = osp.join(cfg.work_dir, name)
    prepare_run_config(cfg)
    set_evaluator_output(cfg, 'test_evaluator', output_dir)
    setup_distributed(cfg, args.launcher)

    runner = STBSMRunner.from_cfg(cfg)
    metrics = runner.test()
    if runner.rank == 0:
        if args.threshold == 'youden':
            metrics = choose_youden_threshold(output_dir, cfg, args, split,
                                              metrics)
        if threshold_record is not None:
            check_positive_class(output_dir, threshold_record,
                                 args.threshold_file)
        write_test_record(output_dir, cfg, args.checkpoint, metrics)
        table = write_summary(output_dir, cfg, args)
        runner.logger.info(f'Image- and patient-level figures:\n{table}')
        runner.logger.info(f'Metrics and predictions written to {output_dir}')


def set_evaluator_threshold(cfg: Config, threshold: float) -> None:
    """Set the threshold of the DiagnosisMetric(s) of cfg.test_evaluator."""
    evaluator = cfg.get('test_evaluator')
    metrics = evaluator if isinstance(evaluator, list) else [evaluator]
    if isinstance(evaluator, dict) and 'metrics' in evaluator:
        metrics = evaluator['metrics']
        metrics = metrics if isinstance(metrics, list) else [metrics]
    diagnosis = [metric for metric in metrics
                 if metric and metric.get('type') == 'DiagnosisMetric']
    if not diagnosis:
        raise SystemExit(
            'error: the config\'s test_evaluator has no DiagnosisMetric, so '
            '--threshold and --threshold-file have nothing to set. Add '
            'dict(type=\'DiagnosisMetric\') to test_evaluator.')
    for metric in diagnosis:
        metric['threshold'] = threshold


def log_youden_threshold(threshold: float, figures: dict, split: str) -> None:
    """Log the chosen threshold, and warn when it separates nothing."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    sensitivity, specificity = figures['sensitivity'], figures['specificity']
    youden_j = sensitivity + specificity - 1
    logger.info(f'Youden threshold on split {split}: {threshold:.6g} '
                f'(sensitivity {sensitivity:.3f}, specificity '
                f'{specificity:.3f}, J {youden_j:.3f}).')
    if youden_j <= 0:
        logger.warning(
            f'On split {split} no threshold does better than chance (the '
            f'largest Youden J is {youden_j:.3f}, AUC {figures["auc"]}), so '
            f'the threshold {threshold:.6g} is not informative. Check the '
            'model and the split before applying it to other data.')


def choose_youden_threshold(output_dir: str, cfg: Config, args, split: str,
                            metrics):
    """Pick the Youden threshold, rewrite the outputs at it and record it.

    The run used the config's threshold. The threshold is picked on the
    saved predictions, predictions.csv and metrics.json are recomputed at
    it, and threshold.json records it. Returns the runner's metrics with
    the figures at the new threshold.
    """
    from stbsm_mm.evaluation import (apply_threshold, read_predictions_csv,
                                     write_threshold_json,
                                     youden_threshold_of_records)
    from stbsm_mm.evaluation.diagnosis_metric import SCALAR_FIGURES
    from stbsm_mm.utils import sha256_of_file

    figures = json.loads(
        Path(output_dir, 'metrics.json').read_text(encoding='utf-8'))
    records = read_predictions_csv(osp.join(output_dir, 'predictions.csv'))
    try:
        threshold = youden_threshold_of_records(
            records, figures['classes'], figures['positive_class'])
    except ValueError as error:
        raise SystemExit(f'error: --threshold youden failed on split '
                         f'{split}: {error}')

    figures = apply_threshold(output_dir, threshold)
    log_youden_threshold(threshold, figures, split)
    write_threshold_json(
        osp.join(output_dir, 'threshold.json'), threshold,
        split=split,
        positive_class=figures['positive_class'], n_images=len(records),
        checkpoint_sha256=sha256_of_file(args.checkpoint))
    set_evaluator_threshold(cfg, threshold)

    # The runner's metrics were computed at the old threshold. Each
    # figure is replaced, and one that is undefined now is dropped, as
    # DiagnosisMetric drops it.
    if not metrics:
        return metrics
    prefix = next((key[:-len('accuracy')] for key in metrics
                   if key.endswith('accuracy')), '')
    refreshed = {key: value for key, value in metrics.items()
                 if key[len(prefix):] not in figures}
    for name in (*SCALAR_FIGURES, 'confusion_matrix', 'positive_class'):
        if figures[name] is not None:
            refreshed[prefix + name] = figures[name]
    return refreshed


def check_positive_class(output_dir: str, threshold_record: dict,
                         threshold_file: str) -> None:
    """Exit with an error if threshold.json has another positive class."""
    figures = json.loads(
        Path(output_dir, 'metrics.json').read_text(encoding='utf-8'))
    if figures['positive_class'] != threshold_record['positive_class']:
        raise SystemExit(
            f'error: {threshold_file} contains a threshold on the '
            f'{threshold_record["positive_class"]} probability, but this '
            f'test\'s positive class is {figures["positive_class"]}, so the '
            f'outputs in {output_dir} are not valid. Set the same positive '
            f'class with --cfg-options test_evaluator.positive_class='
            f'{threshold_record["positive_class"]}.')


def write_summary(output_dir: str, cfg: Config, args) -> str:
    """Write summary.json and summary.md: both levels, with intervals."""
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
