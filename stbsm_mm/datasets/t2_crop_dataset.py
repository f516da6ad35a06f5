"""The dataset of T2-weighted lesion crops written by tools/prepare_data.py."""
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from ..cohort.splits import EXTERNAL, TRAIN, VAL, check_disjoint


@DATASETS.register_module()
class T2CropDataset(BaseDataset):
    """Lesion crops of one split of a prepared dataset folder.

    Each sample's data info contains ``img_path``, ``gt_label`` and the ids that
    evaluation needs: ``roi_id``, ``patient_id`` and ``site``. The class
    names come from the annotation file; when ``classes`` is also given in
    the config it must match them in order, so that a class index never
    silently changes meaning.

    On construction the dataset checks that no patient is in two of train,
    val and external (and, for a fold, in both its train and val parts), and
    raises :class:`~stbsm_mm.cohort.LeakageError` if one is.

    Args:
        data_root: The prepared dataset folder (``OUT_DIR`` of
            tools/prepare_data.py).
        split: ``'train'``, ``'val'``, ``'external'``, ``'all'``,
            ``'fold<k>_train'`` or ``'fold<k>_val'``.
        classes: Expected class names in index order, or ``None``.
        **kwargs: Passed to :class:`mmpretrain.datasets.BaseDataset`
            (``pipeline``, ``test_mode``, ...).

    Examples:
        >>> from mmpretrain.registry import DATASETS
        >>> dataset = DATASETS.build(dict(
        ...     type='T2CropDataset', data_root='data/stbsm', split='val',
        ...     pipeline=[dict(type='LoadImageFromFile')]))  # doctest: +SKIP
        >>> dataset.metainfo['classes']  # doctest: +SKIP
        ('STB', 'SM')
    """

    def __init__(self,
                 data_root: str,
                 split: str = TRAIN,
                 classes: Optional[Sequence[str]] = None,
                 **kwargs):
        annotation = Path(data_root) / 'annotations' / f'{split}.json'
        if not annotation.is_file():
            raise FileNotFoundError(
                f'{annotation}: no annotation file for split {split!r}. Run '
                'tools/prepare_data.py COHORT_DIR DATA_ROOT first, and check '
                'data_root in the config (--cfg-options data_root=...).')
        self.split = split
        _check_no_leakage(Path(data_root), split)
        file_classes = tuple(
            json.loads(annotation.read_text())['metainfo']['classes'])
        if classes is not None and tuple(classes) != file_classes:
            raise ValueError(
                f'classes={list(classes)} in the config, but {annotation} '
                f'was prepared with classes {list(file_classes)} (in index '
                'order). Make them equal or drop classes from the config.')
        super().__init__(
            ann_file=f'annotations/{split}.json',
            data_root=data_root,
            metainfo=dict(classes=file_classes),
            **kwargs)

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        for info in data_list:
            info['gt_label'] = int(info['gt_label'])
        return data_list

    def extra_repr(self) -> List[str]:
        return [f'Split: \t{self.split}', f'Data root: \t{self.data_root}']


def _patients(data_root: Path, split: str) -> Optional[Set[str]]:
    path = data_root / 'annotations' / f'{split}.json'
    if not path.is_file():
        return None
    data_list = json.loads(path.read_text())['data_list']
    return {str(info['patient_id']) for info in data_list}


def _check_no_leakage(data_root: Path, split: str) -> None:
    groups: Dict[str, Set[str]] = {}
    names = [TRAIN, VAL, EXTERNAL]
    if split.startswith('fold') and '_' in split:
        fold = split.split('_')[0]
        names = [f'{fold}_train', f'{fold}_val', EXTERNAL]
    for name in names:
        patients = _patients(data_root, name)
        if patients is not None:
            groups[name] = patients
    check_disjoint(groups)
