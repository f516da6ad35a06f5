"""Find a trained model's checkpoint, config, preprocessing and threshold.

A model is given as a training work_dir or as one checkpoint in it. The
work_dir supplies:

* the checkpoint: ``best_*.pth`` (the best validation checkpoint), else the
  one named in ``last_checkpoint``, else the ``epoch_<n>.pth`` with the
  highest ``n``;
* the config: ``config_text`` of ``train_run.json`` (the config as trained,
  overrides included), else the one ``*.py`` config that training dumped;
* the preprocessing: the ``preprocessing`` entry of ``train_run.json``,
  else the prepared data's ``manifest.json`` under the recorded
  ``data_root`` when its SHA-256 matches the recorded ``manifest_sha256``;
* the decision threshold and positive class: the config's
  ``test_evaluator``, unless a ``threshold.json`` is given.
"""
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

from mmengine.logging import MMLogger

from ..evaluation.binary_figures import validate_threshold
from ..preprocessing.prepare import PreprocessConfig
from ..utils.fileio import sha256_of_file
from .errors import InferenceError
from .preprocess import preprocess_config_from_record

PathLike = Union[str, Path]

RUN_RECORD = 'train_run.json'
DEFAULT_THRESHOLD = 0.5
DEFAULT_POSITIVE_CLASS = 0


@dataclass
class TrainedModel:
    """A trained classifier and everything recorded about how to run it.

    Args:
        name: Unique, file-safe name used in the outputs.
        checkpoint: The ``.pth`` file.
        checkpoint_sha256: Its SHA-256.
        config: The ``mmengine.Config`` the model was trained with.
        config_source: Where the config came from.
        preprocessing: Preprocessing parameters of the training crops.
        preprocessing_source: Where they came from.
        classes: Class names in score order, when recorded.
        positive_class: Name or index of the positive class.
        threshold: Positive-class probability at or above which a ROI is
            called positive.
        threshold_source: Where the threshold came from.
    """

    name: str
    checkpoint: Path
    checkpoint_sha256: str
    config: object
    config_source: str
    preprocessing: PreprocessConfig
    preprocessing_source: str
    classes: Optional[Tuple[str, ...]]
    positive_class: Union[str, int]
    threshold: float
    threshold_source: str

    def describe(self) -> dict:
        """Return the model's entry of the JSON summary."""
        return {
            'checkpoint': str(self.checkpoint),
            'checkpoint_sha256': self.checkpoint_sha256,
            'config': self.config_source,
            'preprocessing_source': self.preprocessing_source,
            'threshold': self.threshold,
            'threshold_source': self.threshold_source,
        }


def resolve_checkpoint(path: PathLike) -> Tuple[Path, Path]:
    """Return the checkpoint and the work_dir of a ``--model`` argument.

    Args:
        path: A training work_dir or a ``.pth`` file in one.

    Returns:
        tuple: ``(checkpoint, work_dir)``.

    Raises:
        InferenceError: If the path does not exist or the work_dir contains
            no checkpoint.

    Examples:
        >>> checkpoint, work_dir = resolve_checkpoint(
        ...     'work_dirs/resnet34_stbsm')  # doctest: +SKIP
        >>> checkpoint.name  # doctest: +SKIP
        'best_diagnosis_accuracy_epoch_9.pth'
    """
    path = Path(path)
    if path.is_file():
        return path, path.parent
    if not path.is_dir():
        raise InferenceError(
            f'--model {path}: no such work_dir or checkpoint. Pass the '
            'folder that tools/train.py wrote (--work-dir) or a .pth file '
            'in it.')

    best = sorted(path.glob('best_*.pth'), key=_epoch_number)
    if best:
        return best[-1], path
    last = path / 'last_checkpoint'
    if last.is_file():
        named = Path(last.read_text().strip())
        # A moved work_dir keeps the old absolute path in last_checkpoint.
        for candidate in (named, path / named.name):
            if candidate.is_file():
                return candidate, path
    epochs = sorted(path.glob('epoch_*.pth'), key=_epoch_number)
    if epochs:
        return epochs[-1], path
    raise InferenceError(
        f'--model {path}: no checkpoint (best_*.pth, last_checkpoint or '
        'epoch_<n>.pth) in this folder. Train first, or pass a .pth file.')


def _epoch_number(path: Path) -> int:
    match = re.search(r'(?:epoch|iter)_(\d+)', path.stem)
    return int(match.group(1)) if match else -1


def read_threshold_file(path: PathLike) -> Tuple[float, dict]:
    """Read ``{"threshold": float, ...}`` as written by tools/test.py.

    Args:
        path: The ``threshold.json`` file.

    Returns:
        tuple: the threshold and the file's content, which may also name
        the ``positive_class`` and the ``checkpoint_sha256`` it was chosen
        for.

    Raises:
        InferenceError: If the file is missing, not JSON, or its
            threshold is not a number in [0, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise InferenceError(
            f'--threshold-file {path}: file not found. Pass the '
            'threshold.json that tools/test.py --threshold writes.')
    try:
        content = json.loads(path.read_text(encoding='utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InferenceError(
            f'--threshold-file {path}: not a valid JSON file ({error}).'
        ) from error
    if not isinstance(content, dict) or 'threshold' not in content:
        raise InferenceError(
            f'--threshold-file {path}: no "threshold" entry; expected '
            '{"threshold": 0.42, ...}.')
    try:
        threshold = validate_threshold(content['threshold'])
    except ValueError as error:
        raise InferenceError(f'--threshold-file {path}: {error}') from error
    return threshold, content


def load_trained_model(path: PathLike,
                       threshold_file: Optional[PathLike] = None,
                       name: Optional[str] = None) -> TrainedModel:
    """Collect a model's checkpoint, config, preprocessing and threshold.

    Args:
        path: A training work_dir or a ``.pth`` file in one.
        threshold_file: A ``threshold.json`` that replaces the config's
            ``test_evaluator.threshold``.
        name: Output name of the model (default: from the path).

    Returns:
        TrainedModel: The model's description; the weights load later.

    Raises:
        InferenceError: If the checkpoint, config or recorded preprocessing
            is missing, or the threshold is invalid.

    Examples:
        >>> model = load_trained_model(
        ...     'work_dirs/resnet34_stbsm')  # doctest: +SKIP
        >>> model.preprocessing.margin  # doctest: +SKIP
        0.0
    """
    checkpoint, work_dir = resolve_checkpoint(path)
    record = _read_run_record(work_dir)

    config, config_source = _load_config(work_dir, record)
    preprocessing, preprocessing_source, classes = _recorded_preprocessing(
        work_dir, record)

    positive_class, threshold = _evaluator_threshold(config, work_dir)
    threshold_source = f'{config_source}: test_evaluator.threshold'
    checkpoint_sha256 = sha256_of_file(checkpoint)
    if threshold_file is not None:
        threshold, content = read_threshold_file(threshold_file)
        threshold_source = str(threshold_file)
        # The threshold applies to the probability of the class it was
        # chosen for.
        if content.get('positive_class') is not None:
            positive_class = content['positive_class']
        chosen_for = content.get('checkpoint_sha256')
        if chosen_for and chosen_for != checkpoint_sha256:
            MMLogger.get_current_instance().warning(
                f'--threshold-file {threshold_file} was chosen on the scores '
                f'of another checkpoint (SHA-256 {chosen_for[:12]}...) than '
                f'{checkpoint}; check that it belongs to this model.')

    return TrainedModel(
        name=name or default_model_name(Path(path), checkpoint),
        checkpoint=checkpoint,
        checkpoint_sha256=checkpoint_sha256,
        config=config,
        config_source=config_source,
        preprocessing=preprocessing,
        preprocessing_source=preprocessing_source,
        classes=classes,
        positive_class=positive_class,
        threshold=threshold,
        threshold_source=threshold_source)


def default_model_name(path: Path, checkpoint: Path) -> str:
    """Name a model by its work_dir, plus the checkpoint when one is given."""
    if path.is_file():
        text = f'{checkpoint.parent.name}_{checkpoint.stem}'
    else:
        text = path.resolve().name
    return re.sub(r'[^0-9A-Za-z._-]', '_', text).strip('.') or 'model'


def unique_names(names: Sequence[str]) -> list:
    """Append ``_2``, ``_3``, ... to repeated model names."""
    seen: dict = {}
    result = []
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        result.append(name if count == 1 else f'{name}_{count}')
    return result


def _read_run_record(work_dir: Path) -> dict:
    path = work_dir / RUN_RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding='utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InferenceError(
            f'{path}: not a valid JSON file ({error}). Restore it from the '
            'training run.') from error
    return record if isinstance(record, dict) else {}


def _load_config(work_dir: Path, record: dict):
    from mmengine.config import Config

    text = record.get('config_text')
    if text:
        return (Config.fromstring(text, '.py'),
                f'{work_dir / RUN_RECORD} (config_text)')
    configs = sorted(work_dir.glob('*.py'))
    if len(configs) == 1:
        return Config.fromfile(str(configs[0])), str(configs[0])
    raise InferenceError(
        f'{work_dir}: found {len(configs)} config files (*.py) and no '
        f'config_text in {RUN_RECORD}, so the model config is unknown. '
        'Keep the one config that tools/train.py dumped in the work_dir.')


def _recorded_preprocessing(
        work_dir: Path, record: dict
) -> Tuple[PreprocessConfig, str, Optional[Tuple[str, ...]]]:
    """Return the preprocessing, where it was found, and the class names."""
    record_path = work_dir / RUN_RECORD
    classes = record.get('classes')
    if record.get('preprocessing') is not None:
        config = preprocess_config_from_record(record['preprocessing'],
                                               str(record_path))
        return config, str(record_path), _class_tuple(classes)

    data_root = record.get('data_root')
    manifest = Path(data_root) / 'manifest.json' if data_root else None
    if manifest is None or not manifest.is_file():
        raise InferenceError(
            f'{work_dir}: the model has no recorded preprocessing: '
            f'{record_path.name} has no "preprocessing" entry, and the '
            f'prepared data\'s manifest.json ({manifest or "no data_root"}) '
            'is not here. Without the N4, normalisation and crop parameters '
            'a new slice cannot be prepared as the training crops were. '
            'Copy the manifest.json of the training data to that path, or '
            'retrain with this stbsm-mm version, which copies the '
            'parameters into train_run.json.')
    recorded = record.get('manifest_sha256')
    if recorded and sha256_of_file(manifest) != recorded:
        raise InferenceError(
            f'{manifest}: this manifest.json differs from the one the model '
            f'was trained with (SHA-256 {recorded[:12]}... in '
            f'{record_path.name}); the data were prepared again since, '
            'perhaps with other parameters. Restore the original prepared '
            'data or retrain.')
    content = json.loads(manifest.read_text(encoding='utf-8'))
    config = preprocess_config_from_record(content.get('preprocessing'),
                                           str(manifest))
    return config, str(manifest), _class_tuple(
        classes or content.get('classes'))


def _class_tuple(classes) -> Optional[Tuple[str, ...]]:
    return tuple(str(name) for name in classes) if classes else None


def _evaluator_threshold(config, work_dir: Path) -> Tuple[Union[str, int],
                                                          float]:
    evaluator = config.get('test_evaluator') or {}
    if isinstance(evaluator, (list, tuple)):
        metrics = [item for item in evaluator
                   if item.get('type') == 'DiagnosisMetric']
        evaluator = metrics[0] if metrics else {}
    positive_class = evaluator.get('positive_class', DEFAULT_POSITIVE_CLASS)
    try:
        threshold = validate_threshold(
            evaluator.get('threshold', DEFAULT_THRESHOLD))
    except ValueError as error:
        raise InferenceError(
            f'{work_dir}: test_evaluator.threshold of the config is invalid '
            f'({error}). Pass --threshold-file.') from error
    return positive_class, threshold
