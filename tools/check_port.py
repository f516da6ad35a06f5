"""Check or choose the rendezvous port of a multi-process launch.

Prints the port to use on standard output; errors go to standard error
with a non-zero exit status, before any worker starts.

    python tools/check_port.py            # 29500 if free, else a free port
    python tools/check_port.py --port N   # N, or an error if N is unusable
"""
import argparse
import errno
import socket
import sys

DEFAULT_PORT = 29500
FIRST_UNPRIVILEGED_PORT = 1024


def port_is_free(port: int, host: str = '') -> bool:
    """Return True if a TCP socket can listen on ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port() -> int:
    """Return a port that the operating system reports as free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(('', 0))
        return probe.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description='Print a usable rendezvous port for torchrun.')
    parser.add_argument('--port', type=int,
                        help='port requested with the PORT variable')
    args = parser.parse_args(argv)

    if args.port is None:
        port = DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port()
        if port != DEFAULT_PORT:
            print(f'Port {DEFAULT_PORT} is busy; using free port {port}.',
                  file=sys.stderr)
        print(port)
        return 0

    if not 0 < args.port < 65536:
        print(f'error: PORT={args.port} is not a TCP port (1-65535).',
              file=sys.stderr)
        return 1
    if args.port < FIRST_UNPRIVILEGED_PORT:
        print(f'error: PORT={args.port} is a privileged port (below '
              f'{FIRST_UNPRIVILEGED_PORT}). Set PORT to a port from 1024 to '
              '65535, or leave PORT unset to pick a free one.',
              file=sys.stderr)
        return 1
    if not port_is_free(args.port):
        print(f'error: PORT={args.port} is busy: another program (perhaps '
              'another training run) listens on it. Set PORT to a free '
              'port, or leave PORT unset to pick one.', file=sys.stderr)
        return 1
    print(args.port)
    return 0


if __name__ == '__main__':
    sys.exit(main())
