"""Install stbsm-mm: ``pip install -e .`` (``.[tests]`` adds the test tools).

The stack is pinned to the releases that are known to work together:

* torch 2.14.1 and torchvision 0.29.1 (a matching pair; other torch builds
  cannot load torchvision's compiled operators);
* mmpretrain 1.2.0, mmengine 0.10.7 and mmcv-lite 2.2.0 (no compiled ops);
* setuptools below 81, because mmengine 0.10.7 imports ``pkg_resources`` to
  resolve ``mmpretrain::`` base configs; setuptools 82 removed it and 81
  warns on every import.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_version() -> str:
    namespace: dict = {}
    exec((HERE / 'stbsm_mm' / 'version.py').read_text(), namespace)
    return namespace['__version__']


INSTALL_REQUIRES = [
    'torch==2.14.1',
    'torchvision==0.29.1',
    'mmpretrain==1.2.0',
    'mmengine==0.10.7',
    'mmcv-lite==2.2.0',
    'setuptools<81',
    'numpy>=1.24',
    'SimpleITK>=2.3',
    'scikit-learn>=1.3',
    'labelme>=5.4',
    'grad-cam>=1.5',
    'pydicom>=2.4',
    'matplotlib>=3.7',
    'opencv-python-headless>=4.8',
    'tqdm>=4.65',
    # ONNX export and its check against PyTorch (tools/export_onnx.py).
    'onnx>=1.16',
    'onnxscript>=0.2',
    'onnxruntime>=1.17',
]

setup(
    name='stbsm-mm',
    version=read_version(),
    description=('MMPreTrain extension that tells spinal tuberculosis from '
                 'spinal metastasis on sagittal T2-weighted MRI'),
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['stbsm_mm', 'stbsm_mm.*']),
    install_requires=INSTALL_REQUIRES,
    entry_points={
        'console_scripts': ['stbsm-infer = stbsm_mm.inference.cli:main'],
    },
    extras_require={'tests': ['pytest>=7.4']},
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Medical Science Apps.',
        'Topic :: Scientific/Engineering :: Image Recognition',
    ],
)
