"""A real etcd for the registry tests: the one CI started, or one of our own.

``CHANSERV_TEST_ETCD`` (set by ``.ci/run``) names a running etcd's client URL. Without
it, :func:`etcd_endpoint` starts ``etcd`` itself when the binary is on PATH (loopback,
free ports, data in a temporary folder, stopped at the end of the session), and skips
the tests otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ENV = "CHANSERV_TEST_ETCD"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def have_etcd() -> bool:
    return shutil.which("etcd") is not None


class EtcdProcess:
    """One single-member etcd on loopback; ``start()`` again after ``stop()`` restarts it
    on the same ports with the same data."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.client_port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = (self.data_dir / "etcd.log").open("ab")
        self.process = subprocess.Popen(
            [
                "etcd",
                "--name=chanserv-test",
                f"--data-dir={self.data_dir / 'data'}",
                f"--listen-client-urls={self.endpoint}",
                f"--advertise-client-urls={self.endpoint}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=chanserv-test={peer}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        # Straight to loopback, whatever proxy the environment names.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited early; see {self.data_dir / 'etcd.log'}")
            try:
                with opener.open(f"{self.endpoint}/health", timeout=1.0) as response:
                    if b"true" in response.read():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd not healthy after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@contextmanager
def own_etcd() -> Iterator[EtcdProcess]:
    """Run an etcd of our own (caller checks :func:`have_etcd` first)."""
    data_dir = Path(tempfile.mkdtemp(prefix="chanserv-etcd-"))
    etcd = EtcdProcess(data_dir)
    try:
        etcd.start()
        yield etcd
    finally:
        etcd.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_endpoint() -> Iterator[str]:
    """The client URL of a running etcd, for the whole session."""
    given = os.environ.get(ENV)
    if given:
        yield given.rstrip("/")
        return
    if not have_etcd():
        pytest.skip(f"no etcd: set {ENV}=http://host:port or put the etcd binary on PATH")
    with own_etcd() as etcd:
        yield etcd.endpoint
