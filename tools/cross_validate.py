"""Cross-validate one config on the patient-grouped folds of a prepared set.

For each fold k, the model is trained on ``fold<k>_train`` and evaluated on
``fold<k>_val`` (the patients held out of that fold) after its last epoch;
no checkpoint is chosen on the held-out patients. The out-of-fold
predictions are then pooled, and every figure is reported per fold and as
mean and standard deviation. A fold whose held-out part has one class only
has no AUC: it is left out of the AUC mean, and the number of folds used is
reported.

Writes, in the work dir: ``fold<k>/`` (each fold's training run, with
``val/metrics.json`` and ``val/predictions.csv``), ``cv_predictions.csv``
(the pooled out-of-fold predictions), ``cv_summary.json`` and
``cv_summary.md``. Folds whose results exist are not trained again.

Example:
    python tools/cross_validate.py configs/stbsm/resnet34_stbsm.py \
        --data-root data/spider_prepared --work-dir work_dirs/cv_resnet34 \
        --cfg-options train_cfg.max_epochs=10
    python tools/cross_validate.py configs/stbsm/resnet34_stbsm.py \
        --data-root data/spider_prepared --pretrained resnet34_imagenet.pth
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
from pathlib import Path

from mmengine.config import Config, DictAction

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Cross-validate a config on the patient-grouped folds '
        'written by tools/prepare_data.py.')
    parser.add_argument('config', help='config file, e.g. '
                        'configs/stbsm/resnet34_stbsm.py')
    parser.add_argument('--data-root', required=True,
                        help='prepared dataset folder (with fold files)')
    parser.add_argument('--work-dir', help='output folder (default: '
                        'work_dirs/cv_<config name>)')
    parser.add_argument('--folds', type=int, nargs='+',
                        help='fold numbers to run (default: all)')
    parser.add_argument('--pretrained', metavar='PATH|zoo|none',
                        help='backbone weights every fold starts from: a '
                        'local checkpoint, "zoo" (the config\'s '
                        'pretrained_zoo_model, downloaded from the MMPreTrain '
                        'model zoo), an MMPreTrain model name, or "none" '
                        '(default: the config\'s pretrained setting)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def fold_config(args, fold: int) -> Config:
    """Return the config of one fold: its train and held-out splits."""
    from stbsm_mm.engine.config import _datasets

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.data_root = args.data_root
    if args.pretrained is not None:
        cfg.pretrained = args.pretrained
    splits = {
        'train_dataloader': f'fold{fold}_train',
        'val_dataloader': f'fold{fold}_val',
        'test_dataloader': f'fold{fold}_val',
    }
    for loader, split in splits.items():
        for dataset in _datasets(cfg[loader]['dataset']):
            if 'split' in dataset:
                dataset['split'] = split
    # The held-out fold is evaluated after the last epoch only; no
    # checkpoint is chosen on it.
    cfg.default_hooks.checkpoint.save_best = None
    return cfg


def check_pretrained(args, fold: int):
    """Return an error message if the pretrained setting is invalid.

    A local checkpoint is passed on to each fold by its absolute path, since
    the fold configs are written into the work dir.
    """
    from stbsm_mm.engine import resolve_pretrained

    cfg = fold_config(args, fold)
    try:
        source = resolve_pretrained(cfg.get('pretrained'),
                                    cfg.get('pretrained_zoo_model'),
                                    cfg.model.backbone)
    except (FileNotFoundError, ValueError) as error:
        return str(error)
    if source is not None and source.url is None:
        args.pretrained = source.checkpoint
    return None


def run_fold(args, fold: int, work_dir: Path) -> dict:
    fold_dir = work_dir / f'fold{fold}'
    metrics_path = fold_dir / 'val' / 'metrics.json'
    finished = fold_dir / 'train_run.json'
    if metrics_path.is_file() and finished.is_file():
        print(f'fold {fold}: reusing {metrics_path}', flush=True)
        return json.loads(metrics_path.read_text())

    cfg = fold_config(args, fold)
    fold_dir.mkdir(parents=True, exist_ok=True)
    config_path = fold_dir / f'fold{fold}_config.py'
    cfg.dump(str(config_path))
    command = [sys.executable, str(HERE / 'train.py'), str(config_path),
               '--work-dir', str(fold_dir)]
    print(f'fold {fold}: training ({" ".join(command)})', flush=True)
    subprocess.run(command, check=True)
    return json.loads(metrics_path.read_text())


def main(argv=None) -> int:
    args = parse_args(argv)
    from stbsm_mm.evaluation.binary_figures import (read_predictions_csv,
                                                    write_predictions_csv)
    from stbsm_mm.evaluation.cross_validation import (check_out_of_fold,
                                                      pooled_figures,
                                                      summarize_folds)
    from stbsm_mm.utils import atomic_write_json, atomic_write_text

    manifest_path = Path(args.data_root) / 'manifest.json'
    if not manifest_path.is_file():
        print(f'error: {manifest_path} not found. Prepare the data with '
              'tools/prepare_data.py first.', file=sys.stderr)
        return 1
    n_folds = json.loads(manifest_path.read_text())['split']['n_folds']
    if not n_folds:
        print(f'error: {args.data_root} was prepared with --folds 0.',
              file=sys.stderr)
        return 1
    folds = args.folds if args.folds is not None else list(range(n_folds))
    unknown = [fold for fold in folds if not 0 <= fold < n_folds]
    if unknown:
        print(f'error: folds {unknown} do not exist; the data has folds '
              f'0..{n_folds - 1}.', file=sys.stderr)
        return 1
    error = check_pretrained(args, folds[0])
    if error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = Path(args.work_dir or osp.join('work_dirs', f'cv_{name}'))

    # Train and evaluate each fold.
    fold_figures = [run_fold(args, fold, work_dir) for fold in folds]

    # Pool the out-of-fold predictions.
    records = []
    for fold in folds:
        for record in read_predictions_csv(work_dir / f'fold{fold}' / 'val' /
                                           'predictions.csv'):
            records.append(dict(record, fold=fold))
    repeated = check_out_of_fold(records)
    if repeated:
        print(f'error: ROIs {repeated[:5]} were held out by more than one '
              'fold; the fold files are inconsistent.', file=sys.stderr)
        return 1
    first = fold_figures[0]
    classes = first['classes']
    pooled = pooled_figures(records, classes, first['positive_class'],
                            first['threshold'])

    # Write the summary.
    summary = summarize_folds(fold_figures)
    write_predictions_csv(work_dir / 'cv_predictions.csv',
                          [{k: v for k, v in r.items() if k != 'fold'}
                           for r in records])
    atomic_write_json(work_dir / 'cv_summary.json', {
        'config': args.config,
        'data_root': args.data_root,
        'folds': folds,
        'positive_class': first['positive_class'],
        'threshold': first['threshold'],
        'per_fold_images': [fold['n_images'] for fold in fold_figures],
        'summary': summary,
        'pooled_out_of_fold': pooled,
    })
    atomic_write_text(work_dir / 'cv_summary.md',
                      _markdown(summary, pooled, folds))
    print(_markdown(summary, pooled, folds))
    print(f'Cross-validation results written to {work_dir}')
    return 0


def _markdown(summary: dict, pooled: dict, folds) -> str:
    def cell(value):
        return 'undefined' if value is None else f'{100 * value:.1f}'

    header = ['figure'] + [f'fold {fold}' for fold in folds] + [
        'mean', 'SD', 'folds used', 'pooled'
    ]
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    for name, entry in summary.items():
        row = [name] + [cell(value) for value in entry['per_fold']] + [
            cell(entry['mean']), cell(entry['std']),
            f'{entry["n_folds_used"]}/{entry["n_folds"]}',
            cell(pooled.get(name))
        ]
        lines.append('| ' + ' | '.join(row) + ' |')
    note = (f'\nImage-level figures in percent; positive class '
            f'{pooled["positive_class"]}. "pooled" is computed on all '
            'out-of-fold predictions together.\n')
    return '\n'.join(lines) + '\n' + note


if __name__ == '__main__':
    sys.exit(main())
