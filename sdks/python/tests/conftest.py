"""Fixtures: a real herald server from $HERALD_BIN (default
<repo>/target/debug/herald) on a free port with a temp data dir, started
per test module or per test, and killed at the end."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

import herald

ROOT = Path(__file__).resolve().parents[3]
SDK = Path(__file__).resolve().parents[1]
for p in (SDK / "examples" / "gen", SDK / "examples", SDK / "interop" / "gen"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def herald_bin() -> str:
    path = os.environ.get("HERALD_BIN", str(ROOT / "target" / "debug" / "herald"))
    if not os.access(path, os.X_OK):
        pytest.exit(
            f"no herald binary at {path}: build it (cargo build) or set HERALD_BIN", returncode=2
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A herald process; restartable on the same port and data dir."""

    def __init__(self, *args: str, start: bool = True) -> None:
        self.port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix="herald-py-test-")
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(Path(self.data_dir).parent / f"{Path(self.data_dir).name}.log", "ab")
        if start:
            self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def addr(self) -> str:
        """``host:port``."""
        return f"127.0.0.1:{self.port}"

    def signal(self, sig: int) -> None:
        """Sends ``sig`` to the running server (e.g. SIGSTOP / SIGCONT)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [herald_bin(), "serve", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", self.data_dir, "--log-level", "warn", *self.args],
            stdout=self.log, stderr=self.log,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"herald exited with {self.proc.returncode}; log: {self.log.name}")
            try:
                with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
                    status = health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(), timeout=0.5
                    ).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        raise RuntimeError("herald did not report SERVING within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def strict_server() -> Iterator[Server]:
    """Topics are not auto-created."""
    s = Server("--auto-create-topics", "false")
    yield s
    s.stop()


@pytest.fixture
def own_server() -> Iterator[Server]:
    """A server for one test (e.g. to restart it)."""
    s = Server()
    yield s
    s.stop()


@pytest_asyncio.fixture
async def client(server: Server) -> AsyncIterator[herald.Client]:
    async with herald.Client(server.endpoint, request_timeout=10) as c:
        yield c


@pytest.fixture
def topic() -> str:
    """A fresh topic per test."""
    return f"py-test-{uuid.uuid4().hex[:12]}"


async def eventually(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
