"""Shared fixtures: the repository, the real demo cohort, tool runner."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_COHORT = Path(
    os.environ.get('STBSM_DEMO_COHORT',
                   REPO_ROOT.parent / 'shared' / 'data' / 'spider-t2-demo'))
# The Philips scanner's patients form the demo cohort's external test set.
DEMO_EXTERNAL_SITE = 'Philips Ingenia'
DEMO_EXTERNAL_PATIENTS = {'100', '169', '244', '36'}


def run_tool(*args, cwd=REPO_ROOT, expect_ok=True, env=None, timeout=600):
    """Run ``python tools/...`` (or a shell script) and return the result."""
    command = [str(arg) for arg in args]
    if command[0].endswith('.py'):
        command = [sys.executable] + command
    elif command[0].endswith('.sh'):
        command = ['bash'] + command
    full_env = dict(os.environ, PYTHON=sys.executable,
                    PYTHONUNBUFFERED='1', **(env or {}))
    # A new session lets a timeout stop torchrun and all of its workers.
    process = subprocess.Popen(command, cwd=cwd, env=full_env, text=True,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f'{" ".join(command)} timed out after {timeout} s:\n'
                    f'{output[-6000:]}')
    result = subprocess.CompletedProcess(command, process.returncode, output)
    if expect_ok and result.returncode != 0:
        pytest.fail(f'{" ".join(command)} exited with {result.returncode}:\n'
                    f'{output[-6000:]}')
    result.output = output
    return result


@pytest.fixture(scope='session')
def demo_cohort() -> Path:
    if not (DEMO_COHORT / 'rois.csv').is_file():
        pytest.fail(
            f'The real demo cohort is missing at {DEMO_COHORT}. Set '
            'STBSM_DEMO_COHORT to the spider-t2-demo folder.')
    return DEMO_COHORT


@pytest.fixture(scope='session')
def spider_prepared(demo_cohort, tmp_path_factory) -> Path:
    """The real demo cohort prepared once per session (Philips external)."""
    out_dir = tmp_path_factory.mktemp('spider_prepared')
    run_tool('tools/prepare_data.py', demo_cohort, out_dir,
             '--external-sites', DEMO_EXTERNAL_SITE, '--no-progress')
    return out_dir
