"""Rendezvous port checks of tools/dist_train.sh and tools/check_port.py."""
import socket

import pytest

from conftest import run_tool


@pytest.fixture
def busy_port():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(('', 0))
    listener.listen()
    yield listener.getsockname()[1]
    listener.close()


def test_busy_port_rejected_before_workers(busy_port, tmp_path):
    result = run_tool('tools/dist_train.sh', 'configs/stbsm/resnet34_stbsm.py',
                      2, '--work-dir', tmp_path / 'work',
                      env={'PORT': str(busy_port)}, expect_ok=False)
    assert result.returncode != 0
    assert f'PORT={busy_port} is busy' in result.output
    assert 'torch.distributed' not in result.output
    assert not (tmp_path / 'work').exists()


def test_privileged_port_rejected(tmp_path):
    result = run_tool('tools/dist_train.sh', 'configs/stbsm/resnet34_stbsm.py',
                      2, '--work-dir', tmp_path / 'work', env={'PORT': '80'},
                      expect_ok=False)
    assert result.returncode != 0
    assert 'PORT=80 is a privileged port' in result.output


def test_invalid_port_rejected():
    result = run_tool('tools/check_port.py', '--port', '70000',
                      expect_ok=False)
    assert result.returncode == 1
    assert 'PORT=70000 is not a TCP port' in result.output


def test_free_port_chosen_when_default_busy():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(('', 29500))
        listener.listen()
    except OSError:
        pass  # Already busy: the tool must avoid it all the same.
    try:
        result = run_tool('tools/check_port.py')
    finally:
        listener.close()
    port = int(result.output.strip().splitlines()[-1])
    assert port != 29500
    assert 'Port 29500 is busy; using free port' in result.output


def test_requested_free_port_kept():
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(('', 0))
    port = probe.getsockname()[1]
    probe.close()
    result = run_tool('tools/check_port.py', '--port', port)
    assert result.output.strip().splitlines()[-1] == str(port)
