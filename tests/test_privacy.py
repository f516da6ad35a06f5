"""No patient identifier from a DICOM header reaches any pipeline output.

The real demo cohort and the synthetic cohort both ship one-slice DICOM
series whose headers contain placeholder identifiers (names, ids, birth date,
institution, study dates). These tests read those values from the headers,
run the pipeline with the DICOM folders as the slice source, and search
every output file's bytes, every output file name and the tools' console
output for each value.
"""
import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.datadict import tag_for_keyword
from pydicom.multival import MultiValue

from conftest import DEMO_EXTERNAL_SITE, run_tool
from stbsm_mm.cohort import PLACEHOLDER_IDENTIFIERS, generate_synthetic_cohort

IDENTIFYING_KEYWORDS = (
    'PatientName', 'PatientID', 'PatientBirthDate', 'InstitutionName',
    'AccessionNumber', 'StudyDate', 'SeriesDate', 'AcquisitionDate',
    'ContentDate', 'ReferringPhysicianName', 'OtherPatientIDs', 'StudyID')

# Shorter values (a StudyID of '1', a two-letter code) are too generic to
# search for. In 255 MB of random bytes, the size of a ResNet34 checkpoint
# with its optimizer state, a given 3-byte sequence is expected about 15
# times by chance and a given 4-byte sequence about 0.06 times.
MIN_IDENTIFIER_LENGTH = 4

QUICK_TRAIN = [
    'train_cfg.max_epochs=1',
    'train_dataloader.dataset.times=1',
    'train_dataloader.batch_size=8',
    'train_dataloader.dataset.dataset.indices=8',
    'val_dataloader.batch_size=16',
]


@dataclass(frozen=True)
class Identifier:
    """One identifying header value and the byte patterns that find it.

    Patterns are lower-case, so the search ignores ASCII case.
    """

    description: str
    patterns: frozenset[bytes]


def _raw_values(dataset: pydicom.Dataset, keyword: str) -> list[bytes]:
    """Return the element's stored bytes, one entry per value."""
    element = dataset.get_item(tag_for_keyword(keyword))
    if element is None:
        return []
    if isinstance(element, RawDataElement):
        raw = element.value or b''
    elif isinstance(element.value, MultiValue):
        raw = '\\'.join(str(value) for value in element.value).encode()
    else:
        raw = str(element.value).encode('utf-8')
    return [value.strip(b' \x00') for value in raw.split(b'\\')]


def _text_variants(keyword: str, value: str) -> set[str]:
    """Return the value and the forms a tool could rewrite it into."""
    variants = {value}
    if keyword.endswith('Name') and keyword != 'InstitutionName':
        # NOTE: single name components are not searched, because they can
        # be generic words ('PATIENT') or the pseudonymous patient_id that
        # the outputs are meant to carry ('P001' in SYNTHETIC^PATIENT^P001).
        variants.add(' '.join(value.replace('=', '^').split('^')).strip())
    if keyword.endswith('Date') and len(value) == 8 and value.isdigit():
        variants.add(f'{value[:4]}-{value[4:6]}-{value[6:]}')
    return variants


def collect_identifiers(dicom_files: list[Path],
                        root: Path) -> tuple[list[Identifier], list[str]]:
    """Read the identifying values of DICOM headers.

    Args:
        dicom_files: DICOM files to read.
        root: Folder the descriptions name the files relative to.

    Returns:
        tuple[list[Identifier], list[str]]: The identifiers to search for,
        and the descriptions of the non-empty values skipped as shorter
        than ``MIN_IDENTIFIER_LENGTH``.
    """
    identifiers = []
    skipped = []
    for path in dicom_files:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in IDENTIFYING_KEYWORDS:
            for raw in _raw_values(dataset, keyword):
                text = raw.decode('utf-8', errors='replace')
                description = (f'{keyword} {text!r} of '
                               f'{path.relative_to(root)}')
                if len(raw) < MIN_IDENTIFIER_LENGTH:
                    if raw:
                        skipped.append(description)
                    continue
                patterns = {raw.lower()}
                patterns.update(
                    variant.encode('utf-8').lower()
                    for variant in _text_variants(keyword, text))
                patterns = {
                    pattern for pattern in patterns
                    if len(pattern) >= MIN_IDENTIFIER_LENGTH
                }
                identifiers.append(
                    Identifier(description, frozenset(patterns)))
    return identifiers, skipped


def _search_bytes(data: bytes, identifiers: list[Identifier]) -> list[str]:
    """Return the descriptions of the identifiers found in ``data``."""
    data = data.lower()
    # Many series share a value, such as the institution or a date. Each
    # pattern is searched once, because one pattern takes about 0.1 s on a
    # 255 MB checkpoint (measured on 2 shared CPU cores).
    patterns = {pattern for i in identifiers for pattern in i.patterns}
    present = {pattern for pattern in patterns if pattern in data}
    found = []
    for identifier in identifiers:
        matches = sorted(identifier.patterns & present)
        if matches:
            matched_text = ', '.join(
                repr(match.decode('utf-8', 'replace')) for match in matches)
            found.append(f'{identifier.description} (matched {matched_text})')
    return found


def search_folder(folder: Path, identifiers: list[Identifier]) -> list[str]:
    """Search every file name and file content under a folder.

    Returns:
        list[str]: One ``'<path>: <identifier>'`` line per finding.
    """
    findings = []
    for path in sorted(folder.rglob('*')):
        relative = path.relative_to(folder)
        for hit in _search_bytes(str(relative).encode('utf-8'), identifiers):
            findings.append(f'{relative} (file name): {hit}')
        if path.is_file():
            for hit in _search_bytes(path.read_bytes(), identifiers):
                findings.append(f'{relative}: {hit}')
    return findings


def search_console(outputs: dict[str, str],
                   identifiers: list[Identifier]) -> list[str]:
    """Search the captured console output of each tool run."""
    findings = []
    for label, text in outputs.items():
        for hit in _search_bytes(text.encode('utf-8'), identifiers):
            findings.append(f'console of {label}: {hit}')
    return findings


def assert_no_identifier(findings: list[str]) -> None:
    assert not findings, ('Patient identifiers found in outputs:\n'
                          + '\n'.join(findings))


@pytest.fixture(scope='module')
def real_identifiers(demo_cohort):
    dicom_files = sorted((demo_cohort / 'dicom').glob('*/*.dcm'))
    return collect_identifiers(dicom_files, demo_cohort)


@pytest.fixture(scope='module')
def real_run(demo_cohort, tmp_path_factory):
    """Prepare from DICOM, train one tiny epoch, test on the external set."""
    root = tmp_path_factory.mktemp('privacy_real')
    prepared = root / 'prepared'
    work_dir = root / 'work'
    console = {}

    result = run_tool('tools/prepare_data.py', demo_cohort, prepared,
                      '--source', 'dicom', '--external-sites',
                      DEMO_EXTERNAL_SITE, '--no-progress')
    console['prepare_data.py'] = result.output

    result = run_tool('tools/train.py', 'configs/stbsm/resnet34_stbsm.py',
                      '--work-dir', work_dir, '--cfg-options',
                      f'data_root={prepared}', *QUICK_TRAIN)
    console['train.py'] = result.output

    result = run_tool('tools/test.py',
                      'configs/stbsm/resnet34_stbsm_external.py',
                      work_dir / 'epoch_1.pth', '--cfg-options',
                      f'data_root={prepared}', 'test_dataloader.batch_size=16')
    console['test.py'] = result.output
    return prepared, work_dir, console


@pytest.fixture(scope='module')
def synthetic_run(tmp_path_factory):
    """A 2-site, 4-patient synthetic cohort prepared from its DICOMs."""
    root = tmp_path_factory.mktemp('privacy_synthetic')
    cohort = generate_synthetic_cohort(root / 'cohort', patients_per_site=2,
                                       sites=('Site A', 'Site B'),
                                       image_size=(128, 128))
    prepared = root / 'prepared'
    # Two development patients allow one validation patient and no folds.
    result = run_tool('tools/prepare_data.py', cohort, prepared, '--source',
                      'dicom', '--external-sites', 'Site B', '--folds', '0',
                      '--val-fraction', '0.5', '--no-progress')
    return cohort, prepared, {'prepare_data.py': result.output}


def test_real_headers_have_identifiers(real_identifiers, demo_cohort):
    identifiers, _ = real_identifiers
    n_series = len(list((demo_cohort / 'dicom').glob('*/*.dcm')))
    names = [i for i in identifiers if i.description.startswith('PatientName')]
    ids = [i for i in identifiers if i.description.startswith('PatientID')]

    assert n_series == 13
    assert len(names) == n_series
    assert len(ids) == n_series


def test_real_pipeline_no_identifiers(real_run, real_identifiers):
    prepared, work_dir, console = real_run
    identifiers, _ = real_identifiers
    checkpoints = sorted(work_dir.glob('*.pth'))

    assert (prepared / 'manifest.json').is_file()
    assert (work_dir / 'external' / 'predictions.csv').is_file()
    assert checkpoints
    # The checkpoints store their config as plain bytes, so a leaked string
    # there would be visible to the byte search.
    for checkpoint in checkpoints:
        assert str(prepared).encode() in checkpoint.read_bytes()
    assert_no_identifier(search_folder(prepared, identifiers))
    assert_no_identifier(search_folder(work_dir, identifiers))
    assert_no_identifier(search_console(console, identifiers))


def test_synthetic_prepare_no_identifiers(synthetic_run):
    cohort, prepared, console = synthetic_run
    dicom_files = sorted((cohort / 'dicom').glob('*/*.dcm'))
    identifiers, _ = collect_identifiers(dicom_files, cohort)
    fragments = [
        Identifier(f'PLACEHOLDER_IDENTIFIERS entry {text!r}',
                   frozenset({text.encode('utf-8').lower()}))
        for text in PLACEHOLDER_IDENTIFIERS
    ]
    collected = b'\n'.join(p for i in identifiers for p in i.patterns)

    assert len(dicom_files) == 5
    for text in PLACEHOLDER_IDENTIFIERS:
        assert text.lower().encode() in collected, text
    assert (prepared / 'annotations' / 'all.json').is_file()
    assert (prepared / 'manifest.json').is_file()
    assert_no_identifier(search_folder(prepared, identifiers + fragments))
    assert_no_identifier(search_console(console, identifiers + fragments))


def test_search_finds_planted_leak(synthetic_run, tmp_path):
    cohort, prepared, _ = synthetic_run
    dicom_file = sorted((cohort / 'dicom').glob('*/*.dcm'))[0]
    identifiers, _ = collect_identifiers([dicom_file], cohort)
    dataset = pydicom.dcmread(dicom_file, stop_before_pixels=True)
    name = str(dataset.PatientName)
    patient_id = str(dataset.PatientID)
    copy = tmp_path / 'prepared'
    shutil.copytree(prepared, copy)

    (copy / 'notes.txt').write_text(f'patient {name.lower()}\n')
    crop = sorted((copy / 'crops').glob('*.png'))[0]
    crop.write_bytes(crop.read_bytes() + b'\x00' + patient_id.encode())
    (copy / 'crops' / f'{patient_id}.json').write_text('{}')
    findings = search_folder(copy, identifiers)
    console = search_console({'train.py': f'loaded {name}'}, identifiers)

    assert any(f.startswith('notes.txt: PatientName') for f in findings)
    assert any(f.startswith(f'{crop.relative_to(copy)}: PatientID')
               for f in findings)
    assert any('(file name): PatientID' in f for f in findings)
    assert len(findings) == 3
    assert console and console[0].startswith('console of train.py')
    assert search_folder(prepared, identifiers) == []


def test_collect_identifiers_cases(tmp_path):
    dataset = pydicom.Dataset()
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    dataset.SOPClassUID = pydicom.uid.MRImageStorage
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.PatientName = 'DOE^JANE'
    dataset.OtherPatientIDs = ['ALIAS-1', 'ALIAS-2']
    dataset.StudyDate = '20011231'
    dataset.StudyID = '7'
    path = tmp_path / 'IM0001.dcm'
    dataset.save_as(path, enforce_file_format=True)

    identifiers, skipped = collect_identifiers([path], tmp_path)
    patterns = {p for i in identifiers for p in i.patterns}

    assert patterns == {b'doe^jane', b'doe jane', b'alias-1', b'alias-2',
                        b'20011231', b'2001-12-31'}
    assert skipped == ["StudyID '7' of IM0001.dcm"]
