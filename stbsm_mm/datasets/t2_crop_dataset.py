"""The dataset of T2-weighted lesion crops written by tools/prepare_data.py."""
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

from mmcv.transforms import LoadImageFromFile
from mmengine.logging import MMLogger
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

    Crops are small (a few hundred of about 100 x 100 pixels in a typical
    cohort), so by default the dataset decodes them once, with the
    pipeline's own ``LoadImageFromFile``, and keeps them in memory while the
    total stays under ``memory_limit_mb``. Each sample then starts from a
    copy of the decoded crop and runs the rest of the pipeline, which gives
    the same arrays as reading the file every time. DataLoader workers,
    forked after construction on Linux, share those pages until written.

    On construction the dataset checks that no patient is in two of train,
    val and external (and, for a fold, in both its train and val parts), and
    raises :class:`~stbsm_mm.cohort.LeakageError` if one is.

    Args:
        data_root: The prepared dataset folder (``OUT_DIR`` of
            tools/prepare_data.py).
        split: ``'train'``, ``'val'``, ``'external'``, ``'all'``,
            ``'fold<k>_train'`` or ``'fold<k>_val'``.
        classes: Expected class names in index order, or ``None``.
        in_memory: Keep decoded crops in memory: ``True``, ``False``, or
            ``None`` (the default) for as long as they fit in
            ``memory_limit_mb``. Only used when the pipeline starts with
            ``LoadImageFromFile``.
        memory_limit_mb: The largest total size of decoded crops, in MiB,
            that ``in_memory=None`` keeps in memory.
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
                 in_memory: Optional[bool] = None,
                 memory_limit_mb: float = 1024,
                 **kwargs):
        annotation = Path(data_root) / 'annotations' / f'{split}.json'
        if not annotation.is_file():
            raise FileNotFoundError(
                f'{annotation}: no annotation file for split {split!r}. Run '
                'tools/prepare_data.py COHORT_DIR DATA_ROOT first, and check '
                'data_root in the config (--cfg-options data_root=...).')
        self.split = split
        self.in_memory = in_memory
        self.memory_limit_mb = memory_limit_mb
        self._decoded: Optional[List[dict]] = None
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

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        super().full_init()
        if self.in_memory is not False:
            self._decoded = self._decode_all()

    def prepare_data(self, idx: int) -> Any:
        if self._decoded is None:
            return super().prepare_data(idx)
        results = self.get_data_info(idx)
        decoded = self._decoded[idx]
        results.update(decoded)
        # Later transforms may change the array in place; the cached crop
        # must stay as decoded.
        results['img'] = decoded['img'].copy()
        for transform in self.pipeline.transforms[1:]:
            results = transform(results)
            if results is None:
                return None
        return results

    def _decode_all(self) -> Optional[List[dict]]:
        """Decode every crop with the pipeline's loader, within the limit.

        Returns ``None`` (read files per sample) when the pipeline does not
        start with ``LoadImageFromFile`` or the crops exceed the limit with
        ``in_memory=None``.
        """
        transforms = getattr(self.pipeline, 'transforms', [])
        if not transforms or not isinstance(transforms[0], LoadImageFromFile):
            return None
        loader = transforms[0]

        limit = None if self.in_memory else self.memory_limit_mb * 2**20
        decoded: List[dict] = []
        total_bytes = 0
        for idx in range(len(self)):
            info = self.get_data_info(idx)
            results = loader(dict(info))
            if results is None:
                return None
            decoded.append({
                key: value
                for key, value in results.items()
                if key not in info or key == 'img_path'
            })
            total_bytes += results['img'].nbytes
            if limit is not None and total_bytes > limit:
                MMLogger.get_current_instance().info(
                    f'{self.split}: decoded crops exceed memory_limit_mb='
                    f'{self.memory_limit_mb}; reading them from disk per '
                    'sample instead.')
                return None
        return decoded

    def extra_repr(self) -> List[str]:
        cached = 'yes' if self._decoded is not None else 'no'
        return [
            f'Split: \t{self.split}', f'Data root: \t{self.data_root}',
            f'Crops in memory: \t{cached}'
        ]


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
