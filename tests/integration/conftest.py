"""Fixtures for kpld's end-to-end tests: the real `kpld` binary, real local Kinesis servers
(kinesalite, kinesis-local), the real Python client and the real aws-kinesis-agg deaggregator.

Environment (scripts/test.sh sets all of it):
  KPLD_BIN                         path of the daemon binary
  KPLD_TEST_KINESIS_ENDPOINT       kinesalite URL (fast, in memory)
  KPLD_TEST_KINESIS_MOCK_ENDPOINT  kinesis-local URL (slow; full API incl. split/merge)
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION (any static pair)

A missing prerequisite skips the tests that need it, except under CI=true where it fails
them: CI must never pass by skipping.

Invariants: every daemon a test starts is stopped with SIGTERM at teardown and must exit 0;
every stream a test creates is deleted at teardown. Timeouts are generous upper bounds, never
what a test asserts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import boto3
import pytest
from botocore.config import Config

from kinesis_helpers import wait_stream_active, write_config

STARTUP_TIMEOUT_S = 60
STOP_TIMEOUT_S = 90


# ---------------------------------------------------------------------------------------------
# prerequisites


def _missing(what: str) -> None:
    """Skip (developer machine) or fail (CI) a test whose prerequisite is missing."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"prerequisite missing under CI: {what}", pytrace=False)
    pytest.skip(f"prerequisite missing: {what}")


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        _missing(f"environment variable {name} (run the tests through scripts/test.sh)")
    return value


@pytest.fixture(scope="session")
def kpld_bin() -> str:
    path = _env("KPLD_BIN")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        _missing(f"KPLD_BIN={path} is not an executable file (cargo build)")
    return path


@pytest.fixture(scope="session")
def kpld_client_module():
    """The Python client (`from kpld import Producer, RecordFailed`)."""
    try:
        import kpld  # noqa: F401
        from kpld import Producer, RecordFailed  # noqa: F401
    except ImportError as exc:
        _missing(f"the Python client (pip install ./clients/python): {exc}")
    return kpld


@pytest.fixture(scope="session")
def kinesalite_endpoint() -> str:
    return _env("KPLD_TEST_KINESIS_ENDPOINT")


@pytest.fixture(scope="session")
def kinesis_mock_endpoint() -> str:
    return _env("KPLD_TEST_KINESIS_MOCK_ENDPOINT")


def make_kinesis_client(endpoint: str):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        config=Config(
            connect_timeout=10,
            read_timeout=120,
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


@pytest.fixture(scope="session")
def kinesis(kinesalite_endpoint):
    """boto3 Kinesis client on kinesalite."""
    return make_kinesis_client(kinesalite_endpoint)


@pytest.fixture(scope="session")
def kinesis_mock(kinesis_mock_endpoint):
    """boto3 Kinesis client on kinesis-local (kinesis-mock)."""
    return make_kinesis_client(kinesis_mock_endpoint)


# ---------------------------------------------------------------------------------------------
# the daemon


def _socket_accepts(path: str) -> bool:
    if not os.path.exists(path):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


@dataclass
class Daemon:
    """A running `kpld` process."""

    proc: subprocess.Popen
    socket_path: str
    config_path: Path
    log_path: Path
    settings: dict[str, Any]
    stopped_rc: Optional[int] = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait for exit (generous timeout), return the exit code."""
        if self.stopped_rc is not None:
            return self.stopped_rc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.stopped_rc = -9
            raise AssertionError(
                f"kpld did not exit within {timeout} s of SIGTERM; log:\n{self.log()[-8000:]}"
            )
        self.stopped_rc = rc
        return rc


@pytest.fixture
def kpld(kpld_bin, kinesalite_endpoint, tmp_path) -> Iterator[Callable[..., Daemon]]:
    """Factory: `kpld(**settings)` writes a temp config (socket in a tmp dir, kinesalite
    endpoint unless `kinesis_endpoint` is given) and starts the real binary; returns once the
    socket accepts connections. At teardown every daemon gets SIGTERM and must exit 0."""
    daemons: list[Daemon] = []

    def start(**overrides: Any) -> Daemon:
        n = len(daemons)
        sock_dir = Path(f"/tmp/kpld-test-{uuid.uuid4().hex[:10]}")  # short: sun_path <= 107
        sock_dir.mkdir(mode=0o700)
        settings: dict[str, Any] = {
            "socket_path": str(sock_dir / "kpld.sock"),
            "region": os.environ.get("AWS_REGION", "us-east-1"),
            "kinesis_endpoint": kinesalite_endpoint,
            "record_max_buffered_time_ms": 100,
            "record_ttl_ms": 60000,
            "shutdown_grace_ms": 30000,
        }
        settings.update(overrides)
        # No metrics (so no CloudWatch upload, which would leave loopback) unless the test
        # configures them: a test that sets any metrics key gets the daemon's defaults.
        metrics_keys = ("metrics_", "cloudwatch_endpoint")
        if not any(k.startswith(metrics_keys) for k in overrides):
            settings["metrics_level"] = "none"
        config_path = write_config(tmp_path / f"kpld-{n}.toml", settings)
        log_path = tmp_path / f"kpld-{n}.log"
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [kpld_bin, "--config", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
        daemon = Daemon(proc, settings["socket_path"], config_path, log_path, settings)
        daemons.append(daemon)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _socket_accepts(daemon.socket_path):
            if proc.poll() is not None:
                daemon.stopped_rc = proc.returncode
                daemons.remove(daemon)  # reported here, not again at teardown
                raise AssertionError(
                    f"kpld exited with {proc.returncode} before its socket accepted "
                    f"connections; config:\n{config_path.read_text()}\nlog:\n{daemon.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"kpld socket {daemon.socket_path} not accepting after "
                    f"{STARTUP_TIMEOUT_S} s; log:\n{daemon.log()}"
                )
            time.sleep(0.05)
        return daemon

    yield start

    problems = []
    for daemon in daemons:
        try:
            rc = daemon.terminate()
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        if rc != 0:
            problems.append(f"kpld exited with {rc} after SIGTERM; log:\n{daemon.log()[-8000:]}")
        sock_dir = Path(daemon.socket_path).parent
        for p in sock_dir.glob("*"):
            p.unlink(missing_ok=True)
        sock_dir.rmdir()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def producers(kpld_client_module) -> Iterator[Callable[[Daemon], Any]]:
    """Factory: `producers(daemon)` returns a connected `kpld.Producer`; closed at teardown."""
    opened = []

    def open_producer(daemon: Daemon):
        producer = kpld_client_module.Producer(socket_path=daemon.socket_path)
        opened.append(producer)
        return producer

    yield open_producer
    for producer in opened:
        close = getattr(producer, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # the daemon may already be gone (shutdown tests)
                pass


# ---------------------------------------------------------------------------------------------
# streams


@pytest.fixture
def make_stream() -> Iterator[Callable[..., str]]:
    """Factory: `make_stream(client, shard_count)` creates a uniquely named stream, waits for
    ACTIVE and returns its name. Streams are deleted at teardown."""
    created = []

    def create(client, shard_count: int) -> str:
        name = f"kpld-test-{uuid.uuid4().hex[:12]}"
        client.create_stream(StreamName=name, ShardCount=shard_count)
        created.append((client, name))
        wait_stream_active(client, name)
        return name

    yield create
    for client, name in created:
        try:
            client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
        except Exception:
            pass
