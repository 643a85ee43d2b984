"""Shared test setup: import kpld from this source tree (also when an older
build of it is installed in the venv), and the fixtures of the integration
tests (see kpld_harness.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parent.parent / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))


import pytest  # noqa: E402

import kpld_harness as harness  # noqa: E402


@pytest.fixture(scope="session")
def kpld_bin() -> str:
    path = harness.env_or_skip("KPLD_BIN", "path of the kpld binary, e.g. target/debug/kpld")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        harness.missing(f"KPLD_BIN={path} is not an executable file (run cargo build)")
    return path


@pytest.fixture(scope="session")
def kinesis_endpoint() -> str:
    return harness.env_or_skip("KPLD_TEST_KINESIS_ENDPOINT", "URL of a running kinesalite")


@pytest.fixture(scope="session")
def kinesis(kinesis_endpoint):
    """A boto3 Kinesis client on the local server."""
    return harness.kinesis_client(kinesis_endpoint)


@pytest.fixture(scope="session")
def stream(kinesis):
    """A 4-shard stream shared by the tests that only put into it."""
    name = harness.create_stream(kinesis, 4)
    yield name
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


@pytest.fixture
def own_stream(kinesis):
    """A 4-shard stream of one test alone, for tests that read all of it back."""
    name = harness.create_stream(kinesis, 4)
    yield name
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


@pytest.fixture
def make_daemon(kpld_bin, kinesis_endpoint, tmp_path_factory):
    """Factory of started daemons (stopped with SIGTERM at teardown, which
    must exit 0 unless the test killed the daemon itself)."""
    daemons = []

    def make(**settings):
        d = harness.Daemon(kpld_bin, tmp_path_factory.mktemp("kpld"), kinesis_endpoint, **settings)
        daemons.append(d)
        return d.start()

    yield make
    for d in daemons:
        if d.running:
            rc = d.stop()
            assert rc == 0, f"kpld exited with {rc} after SIGTERM:\n{d.log()}"


@pytest.fixture(scope="module")
def daemon(kpld_bin, kinesis_endpoint, tmp_path_factory):
    """One daemon shared by a module's tests (100 ms buffering)."""
    d = harness.Daemon(kpld_bin, tmp_path_factory.mktemp("kpld"), kinesis_endpoint).start()
    yield d
    rc = d.stop()
    assert rc == 0, f"kpld exited with {rc} after SIGTERM:\n{d.log()}"
