"""Adjust a loaded config for one run: data root, schedule length, outputs."""
import os.path as osp
from typing import Iterator, List

from mmengine.config import Config, ConfigDict

from .speed import apply_speed_options

DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
EVALUATORS = ('val_evaluator', 'test_evaluator')


def _datasets(node) -> Iterator[ConfigDict]:
    """Yield a dataset config and the datasets it wraps (RepeatDataset...)."""
    while isinstance(node, dict):
        yield node
        node = node.get('dataset')


def sync_data_root(cfg: Config) -> None:
    """Give every dataloader's dataset the top-level ``cfg.data_root``.

    The configs set ``data_root`` once at the top. Values from a config are
    copied into the datasets when the file is parsed, so a later
    ``--cfg-options data_root=DIR`` needs this step to reach them.
    """
    data_root = cfg.get('data_root')
    if data_root is None:
        return
    for name in DATALOADERS:
        loader = cfg.get(name)
        if not loader:
            continue
        for dataset in _datasets(loader.get('dataset')):
            if 'data_root' in dataset:
                dataset['data_root'] = data_root


def fit_schedule_to_max_epochs(cfg: Config) -> None:
    """Rescale epoch-based parameter schedulers to ``train_cfg.max_epochs``.

    The schedule in a config is written for ``cfg.schedule_epochs`` epochs
    (200 in this project). When ``max_epochs`` differs (``--cfg-options
    train_cfg.max_epochs=2`` for a quick run), the begin and end epochs of
    each epoch-based scheduler are scaled by ``max_epochs /
    schedule_epochs``: a warm-up of 5% of the epochs stays 5%, and the
    cosine decay still ends on the last epoch. Boundaries stay whole epochs
    and strictly increasing; a scheduler that would start at or after the
    last epoch is dropped.
    """
    base = cfg.get('schedule_epochs')
    train_cfg = cfg.get('train_cfg') or {}
    target = train_cfg.get('max_epochs')
    schedulers = cfg.get('param_scheduler')
    if not base or not target or base == target or not schedulers:
        return
    if isinstance(schedulers, dict):
        schedulers = [schedulers]

    by_epoch = [s for s in schedulers if s.get('by_epoch', True)]
    boundaries = sorted({s.get('begin', 0) for s in by_epoch}
                        | {min(s.get('end', base), base) for s in by_epoch})
    mapped = {}
    previous = -1
    for boundary in boundaries:
        if boundary >= base:
            new = target
        else:
            new = max(int(round(boundary * target / base)), previous + 1)
        mapped[boundary] = new
        previous = new

    fitted: List[dict] = []
    for scheduler in schedulers:
        if not scheduler.get('by_epoch', True):
            fitted.append(scheduler)
            continue
        begin = mapped[scheduler.get('begin', 0)]
        end = mapped[min(scheduler.get('end', base), base)]
        if begin >= min(end, target):
            continue
        scheduler['begin'], scheduler['end'] = begin, min(end, target)
        if 'T_max' in scheduler:
            scheduler['T_max'] = scheduler['end'] - begin
        fitted.append(scheduler)
    cfg.param_scheduler = fitted
    cfg.schedule_epochs = target


def set_evaluator_output(cfg: Config, name: str, output_dir: str) -> None:
    """Point the DiagnosisMetric(s) of ``cfg[name]`` at ``output_dir``."""
    evaluator = cfg.get(name)
    if evaluator is None:
        return
    metrics = evaluator if isinstance(evaluator, list) else [evaluator]
    if isinstance(evaluator, dict) and 'metrics' in evaluator:
        metrics = evaluator['metrics']
        metrics = metrics if isinstance(metrics, list) else [metrics]
    for metric in metrics:
        if metric.get('type') == 'DiagnosisMetric':
            metric['output_dir'] = osp.abspath(output_dir)


def prepare_run_config(cfg: Config) -> None:
    """Apply :func:`sync_data_root`, :func:`fit_schedule_to_max_epochs` and
    :func:`~stbsm_mm.engine.speed.apply_speed_options`, and send validation
    predictions to ``work_dir/val``."""
    sync_data_root(cfg)
    fit_schedule_to_max_epochs(cfg)
    apply_speed_options(cfg)
    if cfg.get('work_dir'):
        set_evaluator_output(cfg, 'val_evaluator',
                             osp.join(cfg.work_dir, 'val'))
