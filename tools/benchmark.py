"""Measure the speed and memory of stbsm-mm and write them to a JSON file.

Stages, each run in its own child process so that each peak resident memory
(``ru_maxrss``) belongs to one stage:

* ``preprocess``: read + N4 + normalise + crop of a synthetic cohort with
  :func:`stbsm_mm.preprocessing.prepare_cohort`, cold (fresh output folder)
  and warm (re-run that reuses the per-slice cache).
* ``train_<backbone>``: time per training step through MMEngine's Runner
  (config, dataset, RandomAffine pipeline, data preprocessor, model, AdamW
  optimizer wrapper) and through the bare model and optimizer on one
  pre-collated batch, in the same process.
* ``dataloading``: images per second out of the training DataLoader alone.
* ``inference``: one patient's 10 ROI crops through all four models on the
  CPU, with and without building the models and loading their checkpoints.
* ``gpu`` (``--device cuda``): training images per second per backbone in
  fp32 and with autocast (bf16 or fp16).

The parent then launches a short multi-process training run through
``tools/dist_train.sh`` (``--dist-procs``; by default with 2 or more GPUs)
and reads its iteration times from MMEngine's scalar log.

Each figure is the median of ``--repeats`` runs, with min and max. Targets
are printed next to the figures as met / not met.

Examples:
    python tools/benchmark.py --out benchmark.json
    python tools/benchmark.py --tiny --out tiny.json
    python tools/benchmark.py --device cuda --amp bf16 --backbones mvitv2
    python tools/benchmark.py --slices 100 --default-malloc
"""
import argparse
import csv
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / 'configs' / 'stbsm'
BACKBONES = ('resnet34', 'mvitv2', 'efficientnet-b3', 'resnet101')
DEFAULT_BACKBONES = ('resnet34', 'mvitv2')
# Slices per patient of the synthetic cohort at seed 0 (1 to 3 ROIs per
# patient, one or two ROIs per slice): 94 slices for 60 patients.
SLICES_PER_PATIENT = 94 / 60
SITES = 3
PATIENT_CROPS = 10

# Targets printed next to the figures. The ratio is Runner step / bare step
# on the CPU at batch 32. Seconds are for 700 slices cold and warm, and for
# one patient through four models with loading, each on 2 CPU cores. The
# last is MViTv2-small training images/s with bf16 on one H200-class GPU.
TARGET_STEP_RATIO = 1.05
TARGET_COLD_SECONDS_700 = 60.0
TARGET_WARM_SECONDS = 5.0
TARGET_PATIENT_SECONDS = 10.0
TARGET_MVITV2_BF16_IMAGES_PER_S = 8000.0


class _StopTraining(Exception):
    """Raised by the timing hook once enough iterations are measured."""


# ---------------------------------------------------------------------------
# Helpers shared by the parent and the stages.
# ---------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict:
    """Return the median, min, max and count of measured values.

    Args:
        values: One value per repeat; at least one.

    Returns:
        dict: ``median``, ``min``, ``max``, ``n`` and the raw ``values``.

    Examples:
        >>> summarize([3.0, 1.0, 2.0])['median']
        2.0
    """
    if not values:
        raise ValueError('values is empty; measure at least one repeat.')
    return {
        'median': float(statistics.median(values)),
        'min': float(min(values)),
        'max': float(max(values)),
        'n': len(values),
        'values': [float(value) for value in values],
    }


def machine_info() -> dict:
    """Return the CPU model, core counts, memory and GPU of this machine."""
    cpu_model = None
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu_model = line.split(':', 1)[1].strip()
                break
    except OSError:
        cpu_model = platform.processor() or None

    memory_gib = None
    try:
        for line in Path('/proc/meminfo').read_text().splitlines():
            if line.startswith('MemTotal:'):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass

    import torch
    gpu_name = None
    if torch.cuda.is_available():
        gpu_name = torch.cuda.get_device_name(0)
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load = None

    return {
        'cpu_model': cpu_model,
        'cpu_count': os.cpu_count(),
        'cpu_affinity': len(os.sched_getaffinity(0)),
        'memory_gib': memory_gib,
        'torch_threads': torch.get_num_threads(),
        'gpu': gpu_name,
        'gpu_count': torch.cuda.device_count(),
        # 1-, 5- and 15-minute load averages when the run started. Other
        # work on the machine slows every figure.
        'load_average_at_start': load,
        'platform': platform.platform(),
        'hostname': platform.node(),
    }


def count_slices(cohort_dir: Path) -> int:
    """Count the distinct source slices listed in a cohort's ``rois.csv``."""
    with open(cohort_dir / 'rois.csv', newline='') as file:
        rows = list(csv.DictReader(file))
    return len({(row.get('image') or row.get('dicom') or row['annotation'],
                 row.get('slice_index') or '') for row in rows})


def load_config(backbone: str, data_root: str, work_dir: str,
                batch_size: int):
    """Load ``configs/stbsm/<backbone>_stbsm.py`` for a benchmark run."""
    from mmengine.config import Config

    from stbsm_mm.engine import prepare_run_config

    cfg = Config.fromfile(str(CONFIG_DIR / f'{backbone}_stbsm.py'))
    cfg.data_root = data_root
    cfg.work_dir = work_dir
    cfg.log_level = 'WARNING'
    cfg.train_dataloader.batch_size = batch_size
    prepare_run_config(cfg)
    return cfg


def rusage_peaks() -> dict:
    """Return the peak resident memory of this process and its children."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # Linux reports ru_maxrss in KiB.
    return {
        'peak_rss_mib': round(own / 1024, 1),
        'peak_rss_children_mib': round(children / 1024, 1),
    }


# ---------------------------------------------------------------------------
# Stages: each runs in a child process (see run_stage).
# ---------------------------------------------------------------------------


def stage_preprocess(spec: dict) -> dict:
    """Time cold and warm runs of prepare_cohort on the synthetic cohort."""
    from stbsm_mm.preprocessing import prepare_cohort

    cohort_dir = Path(spec['cohort_dir'])
    slices = count_slices(cohort_dir)
    cold, warm = [], []
    out_dir = None
    for repeat in range(spec['repeats']):
        out_dir = Path(spec['work_dir']) / f'prepared_{repeat}'
        shutil.rmtree(out_dir, ignore_errors=True)

        start = time.perf_counter()
        prepare_cohort(cohort_dir, out_dir, external_sites=[spec['external']],
                       workers=spec['workers'], progress=False)
        cold.append(time.perf_counter() - start)

        start = time.perf_counter()
        prepare_cohort(cohort_dir, out_dir, external_sites=[spec['external']],
                       workers=spec['workers'], progress=False)
        warm.append(time.perf_counter() - start)

        # Keep the last prepared folder for the training stages.
        if repeat + 1 < spec['repeats']:
            shutil.rmtree(out_dir)

    return {
        'slices': slices,
        'workers': spec['workers'],
        'cold_seconds': summarize(cold),
        'warm_seconds': summarize(warm),
        'cold_slices_per_s': summarize([slices / t for t in cold]),
        'warm_slices_per_s': summarize([slices / t for t in warm]),
        'prepared_dir': str(out_dir),
    }


def _timing_hook(warmup: int, measured: int):
    """Build an MMEngine hook that records per-iteration times."""
    from mmengine.hooks import Hook

    class IterationTimer(Hook):
        """Record step time (before to after train iter) and full
        iteration time (after to after, including the DataLoader wait)."""

        def __init__(self):
            self.step_times: List[float] = []
            self.iteration_times: List[float] = []
            self._start = None
            self._last_end = None
            self._seen = 0

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self._start = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            end = time.perf_counter()
            self._seen += 1
            if self._seen > warmup:
                self.step_times.append(end - self._start)
                self.iteration_times.append(end - self._last_end)
            self._last_end = end
            if len(self.step_times) >= measured:
                raise _StopTraining()

    return IterationTimer()


def _time_runner_path(cfg, warmup: int, measured: int) -> dict:
    """Time training iterations of STBSMRunner.train with a timing hook."""
    from stbsm_mm.engine import STBSMRunner

    runner = STBSMRunner.from_cfg(cfg)
    hook = _timing_hook(warmup, measured)
    runner.register_hook(hook, priority='VERY_LOW')
    try:
        runner.train()
    except _StopTraining:
        pass
    else:
        raise RuntimeError(
            f'The training epoch ended before {warmup + measured} '
            'iterations; use a smaller --batch-size or more --slices.')
    step_times = list(hook.step_times)
    iteration_times = list(hook.iteration_times)
    del runner, hook
    gc.collect()
    return {
        'step_seconds': summarize(step_times),
        'iteration_seconds': summarize(iteration_times),
    }


def _time_bare_path(cfg, warmup: int, measured: int, device: str) -> dict:
    """Time loss + backward + clip + AdamW step on one pre-collated batch."""
    import torch
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmpretrain.registry import MODELS

    init_default_scope('mmpretrain')
    dataloader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    batch = next(iter(dataloader))
    del dataloader

    model = MODELS.build(cfg.model)
    model.init_weights()
    model.to(device)
    model.train()
    data = model.data_preprocessor(batch, training=True)
    inputs, data_samples = data['inputs'], data['data_samples']

    optimizer_cfg = cfg.optim_wrapper.optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=optimizer_cfg.lr,
                                  weight_decay=optimizer_cfg.weight_decay)
    clip = cfg.optim_wrapper.get('clip_grad')

    times = []
    for index in range(warmup + measured):
        start = time.perf_counter()
        losses = model.loss(inputs, data_samples)
        loss = sum(value for name, value in losses.items()
                   if 'loss' in name)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(),
                                           clip['max_norm'])
        optimizer.step()
        optimizer.zero_grad()
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return {'step_seconds': summarize(times)}


def stage_train(spec: dict) -> dict:
    """Time Runner-path and bare training steps of one backbone."""
    import torch

    import stbsm_mm  # noqa: F401  registers the dataset, transform, runner

    from stbsm_mm.engine.speed import retain_freed_memory

    cfg = load_config(spec['backbone'], spec['data_root'], spec['work_dir'],
                      spec['batch_size'])
    retain = spec.get('retain_freed_memory', True)
    cfg.retain_freed_memory = retain
    # Applied here as well as by STBSMRunner, so that the bare path has the
    # same malloc settings whichever path runs first.
    retained = retain_freed_memory() if retain else False
    runner = _time_runner_path(cfg, spec['warmup'], spec['repeats'])
    bare = _time_bare_path(cfg, spec['warmup'], spec['repeats'],
                           spec['device'])
    ratio = runner['step_seconds']['median'] / bare['step_seconds']['median']
    batch_size = spec['batch_size']
    return {
        'backbone': spec['backbone'],
        'batch_size': batch_size,
        'device': 'cuda' if torch.cuda.is_available() else 'cpu',
        'warmup_iterations': spec['warmup'],
        'retain_freed_memory': retained,
        'runner': runner,
        'bare': bare,
        'runner_to_bare_ratio': ratio,
        'runner_images_per_s': batch_size / runner['step_seconds']['median'],
        'bare_images_per_s': batch_size / bare['step_seconds']['median'],
    }


def _endless(dataloader):
    """Yield batches epoch after epoch, so small datasets can be timed."""
    while True:
        yield from dataloader


def stage_dataloading(spec: dict) -> dict:
    """Time the training DataLoader alone, with the training pipeline."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import stbsm_mm  # noqa: F401

    cfg = load_config('resnet34', spec['data_root'], spec['work_dir'],
                      spec['batch_size'])
    init_default_scope('mmpretrain')
    dataloader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    batches = _endless(dataloader)

    # The first batch includes starting the worker processes, and the
    # workers fill their prefetch queue meanwhile. Taking the queued batches
    # untimed leaves the loader in its steady state.
    queued = dataloader.num_workers * (dataloader.prefetch_factor or 0)
    for _ in range(1 + queued):
        next(batches)
    rates = []
    for _ in range(spec['repeats']):
        images = 0
        start = time.perf_counter()
        for _ in range(spec['batches']):
            batch = next(batches)
            images += len(batch['inputs'])
        rates.append(images / (time.perf_counter() - start))
    return {
        'batch_size': spec['batch_size'],
        'batches_per_repeat': spec['batches'],
        'num_workers': cfg.train_dataloader.num_workers,
        'untimed_batches': 1 + queued,
        'images_per_s': summarize(rates),
    }


def stage_inference(spec: dict) -> dict:
    """Time one patient's crops through all four models on the CPU."""
    import torch
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import stbsm_mm  # noqa: F401
    from stbsm_mm.engine import load_checkpoint_file

    init_default_scope('mmpretrain')
    work_dir = Path(spec['work_dir'])
    crops = sorted(Path(spec['data_root'], 'crops').glob('*.png'))
    if not crops:
        raise RuntimeError(
            f'No crop PNG files found in {spec["data_root"]}/crops; the '
            'preprocess stage writes them.')
    crops = [crops[index % len(crops)] for index in range(PATIENT_CROPS)]

    # Set-up, not timed: a checkpoint of a randomly initialised model each.
    configs, checkpoints = {}, {}
    for backbone in BACKBONES:
        cfg = load_config(backbone, spec['data_root'], str(work_dir), 1)
        model = MODELS.build(cfg.model)
        model.init_weights()
        checkpoints[backbone] = work_dir / f'{backbone}.pth'
        torch.save({'state_dict': model.state_dict()}, checkpoints[backbone])
        configs[backbone] = cfg
        del model

    with_loading, without_loading = [], []
    per_model: Dict[str, List[float]] = {name: [] for name in BACKBONES}
    for _ in range(spec['repeats']):
        total, predict_total = 0.0, 0.0
        for backbone in BACKBONES:
            cfg = configs[backbone]
            start = time.perf_counter()
            model = MODELS.build(cfg.model)
            checkpoint = load_checkpoint_file(checkpoints[backbone],
                                              map_location='cpu')
            model.load_state_dict(checkpoint['state_dict'])
            model.eval()
            loaded = time.perf_counter()

            pipeline = Compose(cfg.test_pipeline)
            samples = [
                pipeline(dict(img_path=str(path), roi_id=path.stem))
                for path in crops
            ]
            with torch.no_grad():
                predictions = model.test_step(pseudo_collate(samples))
            if len(predictions) != PATIENT_CROPS:
                raise RuntimeError(f'{backbone}: {len(predictions)} '
                                   f'predictions for {PATIENT_CROPS} crops.')
            end = time.perf_counter()

            total += end - start
            predict_total += end - loaded
            per_model[backbone].append(end - start)
            del model, checkpoint
        with_loading.append(total)
        without_loading.append(predict_total)

    return {
        'crops': PATIENT_CROPS,
        'models': list(BACKBONES),
        'seconds_with_loading': summarize(with_loading),
        'seconds_without_loading': summarize(without_loading),
        'seconds_per_model_with_loading': {
            name: summarize(values) for name, values in per_model.items()
        },
    }


def stage_gpu(spec: dict) -> dict:
    """Measure training images per second, fp32 and autocast, on a device.

    ``spec['device']`` is ``'cuda'`` (the default) for the GPU figures. The
    tests run the same loop with ``'cpu'`` and a tiny batch, which checks
    the code path but measures nothing useful.

    NOTE: the figures of this stage have not yet been measured on a CUDA
    GPU; its loop has run only on the CPU.
    """
    import torch
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    import stbsm_mm  # noqa: F401

    device = spec.get('device', 'cuda')
    cuda = device == 'cuda'
    if cuda and not torch.cuda.is_available():
        return {'skipped': True,
                'reason': 'torch.cuda.is_available() is False in the stage.'}
    init_default_scope('mmpretrain')
    batch_size = spec['batch_size']
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(
        spec['amp'])
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch_size, 3, 224, 224, generator=generator)
    inputs = inputs.to(device)
    labels = torch.randint(0, 2, (batch_size, ), generator=generator)
    # The head concatenates the labels with its scores, so both live on the
    # same device.
    data_samples = [
        DataSample().set_gt_label(int(label)).to(device) for label in labels
    ]

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    results = {}
    for backbone in spec['backbones']:
        cfg = load_config(backbone, spec['data_root'], spec['work_dir'],
                          batch_size)
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        modes = {'fp32': None}
        if amp_dtype is not None:
            modes[spec['amp']] = amp_dtype
        backbone_result = {}
        for mode, dtype in modes.items():
            scaler = torch.amp.GradScaler(
                device, enabled=dtype is torch.float16)
            times = []
            for index in range(spec['warmup'] + spec['iterations']):
                synchronize()
                start = time.perf_counter()
                with torch.autocast(device, dtype=dtype or torch.float32,
                                    enabled=dtype is not None):
                    losses = model.loss(inputs, data_samples)
                    loss = sum(value for name, value in losses.items()
                               if 'loss' in name)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                synchronize()
                if index >= spec['warmup']:
                    times.append(time.perf_counter() - start)
            backbone_result[mode] = {
                'step_seconds': summarize(times),
                'images_per_s': summarize([batch_size / t for t in times]),
            }
        results[backbone] = backbone_result
        del model, optimizer
        if cuda:
            torch.cuda.empty_cache()
    return {
        'skipped': False,
        'device': device,
        'gpu': torch.cuda.get_device_name(0) if cuda else None,
        'batch_size': batch_size,
        'amp': spec['amp'],
        'backbones': results,
        'peak_gpu_memory_mib': round(
            torch.cuda.max_memory_allocated() / 1024**2, 1) if cuda else None,
    }


def _train_size(cfg) -> int:
    """Return the number of crops in the training split (one repeat)."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    init_default_scope('mmpretrain')
    return len(DATASETS.build(cfg.train_dataloader.dataset.dataset))


def measure_distributed(spec: dict) -> dict:
    """Time a multi-process training run launched by tools/dist_train.sh.

    The run trains one epoch of ``warmup + iterations`` steps per process
    (the training set repeated as often as needed), without validation.
    MMEngine's IterTimerHook logs each iteration's time (data wait
    included) to ``vis_data/scalars.json``. Throughput counts every
    process's batch.

    Args:
        spec: ``backbone``, ``nproc``, ``data_root``, ``work_dir``,
            ``batch_size`` (per process), ``warmup``, ``iterations``,
            ``amp`` (``None``, ``'bf16'`` or ``'fp16'``) and ``timeout``
            in seconds.

    Returns:
        dict: iteration seconds and images per second (median, min, max),
        the backend the run reported and the command's wall time.

    NOTE: this has run with gloo on the CPU only; the NCCL launch on two
    GPUs has not been measured.
    """
    import stbsm_mm  # noqa: F401  registers the dataset

    nproc, batch_size = spec['nproc'], spec['batch_size']
    steps = spec['warmup'] + spec['iterations']
    cfg = load_config(spec['backbone'], spec['data_root'], spec['work_dir'],
                      batch_size)
    per_repeat = _train_size(cfg)
    times = -(-steps * batch_size * nproc // per_repeat)  # ceiling
    work_dir = Path(spec['work_dir'])
    command = [
        'bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'),
        str(CONFIG_DIR / f'{spec["backbone"]}_stbsm.py'), str(nproc),
        '--work-dir', str(work_dir), '--cfg-options',
        f'data_root={spec["data_root"]}',
        f'train_dataloader.batch_size={batch_size}',
        f'train_dataloader.dataset.times={times}',
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=2',
        'default_hooks.logger.interval=1', 'log_processor.window_size=1',
    ]
    if spec.get('amp'):
        command += ['--amp', spec['amp']]
    start = time.perf_counter()
    process = subprocess.run(command, cwd=REPO_ROOT, text=True,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT,
                             timeout=spec.get('timeout', 1800))
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(
            f'{" ".join(command)} failed with exit status '
            f'{process.returncode}:\n{process.stdout[-4000:]}')

    logs = sorted(work_dir.glob('*/vis_data/scalars.json'))
    if not logs:
        raise RuntimeError(f'No vis_data/scalars.json under {work_dir}; '
                           'the run logged no iteration.')
    entries = [json.loads(line) for line in logs[-1].read_text().splitlines()
               if line.strip()]
    iteration_times = [entry['time'] for entry in entries if 'time' in entry]
    measured = iteration_times[spec['warmup']:steps]
    if not measured:
        raise RuntimeError(
            f'{logs[-1]} has {len(iteration_times)} iteration times, so '
            f'{spec["warmup"]} warm-up iterations leave none to measure. '
            'Use more --slices or a smaller --batch-size.')
    backend = None
    for line in process.stdout.splitlines():
        if 'distributed backend:' in line:
            backend = line.rsplit('distributed backend:', 1)[1].strip(' .')
            break
    return {
        'backbone': spec['backbone'],
        'processes': nproc,
        'backend': backend,
        'batch_size_per_process': batch_size,
        'amp': spec.get('amp'),
        'iteration_seconds': summarize(measured),
        'images_per_s': summarize(
            [batch_size * nproc / value for value in measured]),
        'wall_seconds': round(wall, 2),
    }


STAGES: Dict[str, Callable[[dict], dict]] = {
    'preprocess': stage_preprocess,
    'train': stage_train,
    'dataloading': stage_dataloading,
    'inference': stage_inference,
    'gpu': stage_gpu,
}


def run_stage(name: str, spec: dict, work_dir: Path,
              cpu_only: bool = False) -> dict:
    """Run one stage in a child Python process and return its result.

    Args:
        name: Key of :data:`STAGES`.
        spec: JSON-serialisable input of the stage.
        work_dir: Folder for the stage's input and output files.
        cpu_only: Hide the GPUs from the child.

    Returns:
        dict: the stage's result with its ``memory`` peaks and its
        ``wall_seconds`` (process start and imports included).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_path = work_dir / 'spec.json'
    result_path = work_dir / 'result.json'
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    if cpu_only:
        env['CUDA_VISIBLE_DEVICES'] = ''
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, __file__, '--stage', name, '--stage-spec',
         str(spec_path), '--stage-result', str(result_path)],
        cwd=REPO_ROOT, env=env, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f'Benchmark stage {name!r} failed with exit '
                           f'status {process.returncode}:\n'
                           f'{process.stdout[-4000:]}')
    result = json.loads(result_path.read_text())
    result['wall_seconds'] = round(wall, 2)
    return result


def stage_main(name: str, spec_path: str, result_path: str) -> None:
    """Entry point of a stage's child process."""
    spec = json.loads(Path(spec_path).read_text())
    result = STAGES[name](spec)
    result['memory'] = rusage_peaks()
    Path(result_path).write_text(json.dumps(result))


# ---------------------------------------------------------------------------
# The parent: cohort, stages, targets, JSON and table.
# ---------------------------------------------------------------------------


def build_cohort(out_dir: Path, slices: int, image_size: int) -> dict:
    """Generate a synthetic cohort of about ``slices`` slices."""
    from stbsm_mm.cohort import generate_synthetic_cohort

    patients_per_site = max(2, round(slices / SLICES_PER_PATIENT / SITES))
    start = time.perf_counter()
    generate_synthetic_cohort(out_dir, patients_per_site=patients_per_site,
                              image_size=(image_size, image_size), seed=0)
    return {
        'dir': str(out_dir),
        'patients_per_site': patients_per_site,
        'sites': SITES,
        'image_size': [image_size, image_size],
        'slices': count_slices(out_dir),
        'generate_seconds': round(time.perf_counter() - start, 2),
    }


def _target(name: str, measured: Optional[float], limit: float,
            higher_is_better: bool, unit: str, note: str = '',
            comparable: bool = True) -> dict:
    # A figure measured with other settings than the target's (a --tiny
    # run) is reported but not compared.
    if measured is None or not comparable:
        status = 'not measured'
    elif higher_is_better:
        status = 'met' if measured >= limit else 'not met'
    else:
        status = 'met' if measured <= limit else 'not met'
    return {
        'target': name,
        'measured': measured,
        'limit': limit,
        'unit': unit,
        'comparison': '>=' if higher_is_better else '<=',
        'status': status,
        'note': note,
    }


def evaluate_targets(report: dict) -> List[dict]:
    """Compare the figures of a report with the project's targets."""
    targets = []
    settings = report['settings']
    machine = report['machine']
    cores_note = (f'measured on {machine["cpu_affinity"]} usable CPU cores; '
                  'the target is for 2 cores')

    for backbone in ('resnet34', 'mvitv2'):
        entry = report['training'].get(backbone)
        note = (f'CPU, batch {settings["batch_size"]}; the target is for '
                'batch 32 on the CPU')
        ratio = entry['runner_to_bare_ratio'] if entry else None
        if entry is None:
            note = f'{backbone} is not among --backbones'
        elif entry['device'] != 'cpu':
            ratio, note = None, 'measured on the GPU; the target is for CPU'
        targets.append(_target(
            f'{backbone} Runner step / bare step', ratio,
            TARGET_STEP_RATIO, False, 'x', note,
            comparable=settings['batch_size'] == 32))

    preprocess = report['preprocessing']
    throughput = preprocess['cold_slices_per_s']['median']
    targets.append(_target(
        '700 slices preprocessed (cold)', 700 / throughput,
        TARGET_COLD_SECONDS_700, False, 's',
        f'700 / median cold throughput of {preprocess["slices"]} slices of '
        f'{report["cohort"]["image_size"][0]} px; {cores_note}',
        comparable=report['cohort']['image_size'] == [512, 512]))
    warm = 700 / preprocess['warm_slices_per_s']['median']
    targets.append(_target(
        'warm re-run of 700 slices', warm, TARGET_WARM_SECONDS, False, 's',
        f'scaled from {preprocess["slices"]} slices; {cores_note}',
        comparable=report['cohort']['image_size'] == [512, 512]))

    inference = report['inference']
    targets.append(_target(
        'one patient, four models, loading included',
        inference['seconds_with_loading']['median'],
        TARGET_PATIENT_SECONDS, False, 's', cores_note))

    gpu = report['gpu']
    bf16 = None
    note = gpu.get('reason', '')
    if not gpu.get('skipped'):
        mode = gpu['backbones'].get('mvitv2', {}).get('bf16')
        if mode:
            bf16 = mode['images_per_s']['median']
        else:
            note = 'run with --amp bf16 and mvitv2 among --backbones'
        note = note or f'{gpu["gpu"]}, batch {gpu["batch_size"]}'
    targets.append(_target(
        'MViTv2-small bf16 training throughput', bf16,
        TARGET_MVITV2_BF16_IMAGES_PER_S, True, 'images/s', note))
    return targets


def format_table(report: dict) -> str:
    """Return the report's figures and targets as a text table."""
    rows = [('figure', 'median', 'min', 'max', 'unit')]

    def add(label: str, summary: dict, unit: str) -> None:
        rows.append((label, f'{summary["median"]:.3f}',
                     f'{summary["min"]:.3f}', f'{summary["max"]:.3f}', unit))

    preprocess = report['preprocessing']
    add(f'preprocess cold ({preprocess["slices"]} slices)',
        preprocess['cold_slices_per_s'], 'slices/s')
    add('preprocess warm', preprocess['warm_slices_per_s'], 'slices/s')
    for backbone, entry in report['training'].items():
        add(f'{backbone} Runner step (batch {entry["batch_size"]})',
            entry['runner']['step_seconds'], 's')
        add(f'{backbone} Runner iteration incl. data wait',
            entry['runner']['iteration_seconds'], 's')
        add(f'{backbone} bare step', entry['bare']['step_seconds'], 's')
        rows.append((f'{backbone} Runner / bare',
                     f'{entry["runner_to_bare_ratio"]:.3f}', '', '', 'x'))
    add('training DataLoader', report['dataloading']['images_per_s'],
        'images/s')
    add('one patient, 4 models, with loading',
        report['inference']['seconds_with_loading'], 's')
    add('one patient, 4 models, without loading',
        report['inference']['seconds_without_loading'], 's')
    gpu = report['gpu']
    if not gpu.get('skipped'):
        for backbone, modes in gpu['backbones'].items():
            for mode, entry in modes.items():
                add(f'GPU {backbone} {mode}', entry['images_per_s'],
                    'images/s')
    dist = report.get('distributed', {})
    if not dist.get('skipped', True):
        add(f'{dist["backbone"]} {dist["processes"]} processes '
            f'({dist["backend"]}), total', dist['images_per_s'], 'images/s')
    for stage, peak in report['memory'].items():
        rows.append((f'peak RSS {stage}', f'{peak["peak_rss_mib"]:.0f}', '',
                     f'{peak["peak_rss_children_mib"]:.0f} (children)',
                     'MiB'))

    lines = _columns(rows)
    lines.append('')
    target_rows = [('target', 'measured', 'limit', 'status', 'note')]
    for target in report['targets']:
        measured = target['measured']
        measured_text = '-' if measured is None else f'{measured:.3f}'
        # The note gives the reason for "not measured", or the conditions
        # of the measurement.
        target_rows.append(
            (target['target'], f'{measured_text} {target["unit"]}',
             f'{target["comparison"]} {target["limit"]:g}', target['status'],
             target.get('note', '')))
    lines += _columns(target_rows)
    if gpu.get('skipped'):
        lines.append(f'GPU stage skipped: {gpu["reason"]}')
    if dist.get('skipped'):
        lines.append(f'Multi-process launch skipped: {dist["reason"]}')
    return '\n'.join(lines)


def _columns(rows: List[tuple]) -> List[str]:
    widths = [max(len(str(row[i])) for row in rows)
              for i in range(len(rows[0]))]
    return ['  '.join(str(cell).ljust(width)
                      for cell, width in zip(row, widths)).rstrip()
            for row in rows]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Measure preprocessing, training, data loading and '
        'inference speed and peak memory; write a JSON file and print a '
        'table.')
    parser.add_argument('--out', default='benchmark.json',
                        help='JSON file to write (default: benchmark.json); '
                        'an existing file is kept unless --overwrite.')
    parser.add_argument('--overwrite', action='store_true',
                        help='Replace the --out file if it exists.')
    parser.add_argument('--repeats', type=int, default=None,
                        help='Runs per figure (default 3, 1 with --tiny); '
                        'the median, min and max are reported. For '
                        'training, the measured iterations after the '
                        'warm-up.')
    parser.add_argument('--tiny', action='store_true',
                        help='Quick run: about 20 slices of 256x256 pixels, '
                        'batch size 4, one warm-up iteration, one repeat.')
    parser.add_argument('--slices', type=int, default=None,
                        help='Slices in the synthetic cohort (default 700, '
                        '20 with --tiny).')
    parser.add_argument('--backbones', nargs='+', default=None,
                        help=f'Backbones to train: any of {BACKBONES} or '
                        f'"all" (default: {" ".join(DEFAULT_BACKBONES)}).')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='Training batch size (default 32, 4 with '
                        '--tiny).')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu',
                        help='Device of the training stages; cuda adds the '
                        'GPU throughput stage. Inference always runs on '
                        'the CPU.')
    parser.add_argument('--amp', choices=('bf16', 'fp16', 'none'),
                        default='bf16',
                        help='Autocast dtype of the GPU stage, measured '
                        'next to fp32 (default bf16).')
    parser.add_argument('--dist-procs', type=int, default=None,
                        help='Processes of the multi-process training run '
                        'through tools/dist_train.sh (NCCL on GPUs, gloo '
                        'on the CPU); 0 skips it. Default: 2 with --device '
                        'cuda on a machine with 2 or more GPUs, else 0.')
    parser.add_argument('--default-malloc', action='store_true',
                        help='Train with glibc\'s default malloc settings '
                        '(retain_freed_memory = False in the config), to '
                        'measure what retaining freed memory gains.')
    parser.add_argument('--work-dir', default=None,
                        help='Folder for the cohort, prepared data and '
                        'checkpoints (default: a temporary folder, removed '
                        'afterwards).')
    parser.add_argument('--stage', choices=sorted(STAGES),
                        help=argparse.SUPPRESS)
    parser.add_argument('--stage-spec', help=argparse.SUPPRESS)
    parser.add_argument('--stage-result', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.repeats is None:
        args.repeats = 1 if args.tiny else 3
    if args.repeats < 1:
        parser.error(f'--repeats {args.repeats}: use 1 or more.')
    if args.slices is None:
        args.slices = 20 if args.tiny else 700
    if args.slices < 4:
        parser.error(f'--slices {args.slices}: use 4 or more so that every '
                     'split has patients.')
    if args.batch_size is None:
        args.batch_size = 4 if args.tiny else 32
    if args.dist_procs is not None and args.dist_procs != 0 and (
            args.dist_procs < 2):
        parser.error(f'--dist-procs {args.dist_procs}: use 0 to skip the '
                     'multi-process run, or 2 or more processes.')
    if args.batch_size < 2:
        parser.error(f'--batch-size {args.batch_size}: use 2 or more '
                     '(batch normalisation needs two samples).')
    backbones = args.backbones or list(DEFAULT_BACKBONES)
    if 'all' in backbones and len(backbones) > 1:
        parser.error(f'--backbones {" ".join(backbones)}: give "all" alone '
                     'or a list of names.')
    if backbones == ['all']:
        backbones = list(BACKBONES)
    unknown = [name for name in backbones if name not in BACKBONES]
    if unknown:
        parser.error(f'--backbones {unknown}: unknown; use names from '
                     f'{BACKBONES} or "all".')
    args.backbones = backbones
    return args


def check_out_path(out: Path, overwrite: bool) -> None:
    """Exit before any stage runs if the JSON file cannot be written."""
    if out.is_dir():
        raise SystemExit(f'error: --out {out} is a folder; give a file name '
                         'such as benchmark.json.')
    if out.exists() and not overwrite:
        raise SystemExit(f'error: --out {out} exists. Pass --overwrite to '
                         'replace it, or give another file name.')
    folder = out.parent if str(out.parent) else Path('.')
    if not folder.is_dir():
        raise SystemExit(f'error: the folder of --out {out} does not exist; '
                         'create it first.')
    if not os.access(folder, os.W_OK):
        raise SystemExit(f'error: the folder of --out {out} is not '
                         'writable; give a file in a writable folder.')


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if args.stage:
        stage_main(args.stage, args.stage_spec, args.stage_result)
        return {}

    import torch

    from stbsm_mm.engine.provenance import package_versions

    check_out_path(Path(args.out), args.overwrite)
    if args.device == 'cuda':
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise SystemExit(
                'error: --device cuda, but torch.cuda.is_available() is False '
                'on this machine. Run without --device for the CPU figures, '
                'or on a machine with a CUDA GPU.')
        if args.dist_procs and args.dist_procs > gpus:
            raise SystemExit(
                f'error: --dist-procs {args.dist_procs} with --device cuda '
                f'needs one GPU per process, and this machine has {gpus}.')

    started = datetime.now(timezone.utc)
    keep = args.work_dir is not None
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix='stbsm_bench_'))
    work_dir.mkdir(parents=True, exist_ok=True)
    image_size = 256 if args.tiny else 512
    warmup = 1 if args.tiny else 2
    workers = os.cpu_count() or 1
    cuda = args.device == 'cuda'

    report = {
        'command': [sys.executable] + sys.argv,
        'date': started.isoformat(timespec='seconds'),
        'machine': machine_info(),
        'versions': package_versions(),
        'settings': {
            'repeats': args.repeats,
            'tiny': args.tiny,
            'slices_requested': args.slices,
            'backbones': args.backbones,
            'batch_size': args.batch_size,
            'warmup_iterations': warmup,
            'device': args.device,
            # Autocast is measured in the GPU stage only.
            'amp': args.amp if cuda else None,
            'workers': workers,
            'retain_freed_memory': not args.default_malloc,
        },
    }
    dist_procs = args.dist_procs
    if dist_procs is None:
        dist_procs = 2 if cuda and torch.cuda.device_count() >= 2 else 0
    report['settings']['dist_procs'] = dist_procs
    try:
        # Step 1: the synthetic cohort (generation is not timed as a figure).
        cohort_dir = work_dir / 'cohort'
        shutil.rmtree(cohort_dir, ignore_errors=True)
        report['cohort'] = build_cohort(cohort_dir, args.slices, image_size)
        external = 'Site C'

        # Step 2: preprocessing, cold and warm.
        stage_dir = work_dir / 'stages'
        memory = {}
        preprocess = run_stage('preprocess', {
            'cohort_dir': str(cohort_dir),
            'work_dir': str(work_dir),
            'repeats': args.repeats,
            'workers': workers,
            'external': external,
        }, stage_dir / 'preprocess', cpu_only=True)
        memory['preprocess'] = preprocess.pop('memory')
        report['preprocessing'] = preprocess
        data_root = preprocess['prepared_dir']

        # Step 3: training steps, Runner path and bare, per backbone.
        report['training'] = {}
        for backbone in args.backbones:
            name = f'train_{backbone}'
            result = run_stage('train', {
                'backbone': backbone,
                'data_root': data_root,
                'work_dir': str(work_dir / 'runs' / backbone),
                'batch_size': args.batch_size,
                'warmup': warmup,
                'repeats': args.repeats,
                'device': 'cuda' if cuda else 'cpu',
                'retain_freed_memory': not args.default_malloc,
            }, stage_dir / name, cpu_only=not cuda)
            memory[name] = result.pop('memory')
            report['training'][backbone] = result

        # Step 4: the training DataLoader alone.
        result = run_stage('dataloading', {
            'data_root': data_root,
            'work_dir': str(work_dir / 'runs' / 'dataloading'),
            'batch_size': args.batch_size,
            'batches': 2 if args.tiny else 10,
            'repeats': args.repeats,
        }, stage_dir / 'dataloading', cpu_only=True)
        memory['dataloading'] = result.pop('memory')
        report['dataloading'] = result

        # Step 5: one patient through all four models on the CPU.
        checkpoint_dir = work_dir / 'checkpoints'
        checkpoint_dir.mkdir(exist_ok=True)
        result = run_stage('inference', {
            'data_root': data_root,
            'work_dir': str(checkpoint_dir),
            'repeats': args.repeats,
        }, stage_dir / 'inference', cpu_only=True)
        memory['inference'] = result.pop('memory')
        report['inference'] = result

        # Step 6: GPU throughput, fp32 and autocast.
        if not cuda:
            report['gpu'] = {'skipped': True,
                             'reason': 'not requested; run with --device '
                             'cuda on a machine with a CUDA GPU.'}
        else:
            result = run_stage('gpu', {
                'data_root': data_root,
                'work_dir': str(work_dir / 'runs' / 'gpu'),
                'backbones': args.backbones,
                'batch_size': args.batch_size,
                'amp': args.amp,
                'warmup': 3 if not args.tiny else 1,
                'iterations': max(args.repeats, 5 if not args.tiny else 1),
                'device': 'cuda',
            }, stage_dir / 'gpu')
            memory['gpu'] = result.pop('memory')
            report['gpu'] = result

        # Step 7: a multi-process launch through tools/dist_train.sh.
        if dist_procs == 0:
            report['distributed'] = {
                'skipped': True,
                'reason': 'not requested; --dist-procs 2 runs it (the '
                'default with --device cuda and 2 or more GPUs).'}
        else:
            backbone = ('mvitv2' if 'mvitv2' in args.backbones
                        else args.backbones[0])
            report['distributed'] = measure_distributed({
                'backbone': backbone,
                'nproc': dist_procs,
                'data_root': data_root,
                'work_dir': str(work_dir / 'runs' / 'distributed'),
                'batch_size': args.batch_size,
                'warmup': warmup,
                'iterations': args.repeats,
                'amp': args.amp if cuda and args.amp != 'none' else None,
            })
            report['distributed']['skipped'] = False

        report['memory'] = memory
        report['targets'] = evaluate_targets(report)
        report['total_seconds'] = round(
            (datetime.now(timezone.utc) - started).total_seconds(), 1)
    finally:
        if not keep:
            shutil.rmtree(work_dir, ignore_errors=True)

    # The table goes to the console first, so that the figures survive a
    # failed write.
    print(format_table(report))
    from stbsm_mm.utils import atomic_write_json
    atomic_write_json(args.out, report)
    print(f'\nWrote {args.out}')
    return report


if __name__ == '__main__':
    main()
