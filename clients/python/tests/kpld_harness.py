"""Helpers of the integration tests: the real `kpld` binary as a subprocess on
a socket in a temp dir, a real local Kinesis server (kinesalite) through
boto3, and reading records back with the real aws-kinesis-agg deaggregator.

Environment:
  KPLD_BIN                    path of the kpld binary (cargo build → target/debug/kpld)
  KPLD_TEST_KINESIS_ENDPOINT  URL of a running kinesalite, e.g. http://127.0.0.1:4568

Without them the integration tests are skipped, except under CI=true where
they fail: CI must never pass by skipping.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

#: Generous upper bounds for things to happen; never what a test asserts.
STARTUP_TIMEOUT_S = 60
STOP_TIMEOUT_S = 90
RESULT_TIMEOUT_S = 120


def missing(what: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"prerequisite missing under CI: {what}", pytrace=False)
    pytest.skip(f"integration test skipped: {what}")


def env_or_skip(name: str, hint: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        missing(f"${name} is not set ({hint})")
    return value


def kinesis_client(endpoint: str) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:
        missing(f"boto3 is not installed ({e})")
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"}),
    )


def create_stream(kinesis: Any, shards: int) -> str:
    name = f"kpld-py-{uuid.uuid4().hex[:12]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise AssertionError(f"stream {name} not ACTIVE after {STARTUP_TIMEOUT_S} s")
        time.sleep(0.05)
    return name


def shard_ranges(kinesis: Any, stream: str) -> Dict[str, Tuple[int, int]]:
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    return {
        s["ShardId"]: (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in shards
    }


def read_back(kinesis: Any, stream: str, shard_id: str, sequence_number: str, sub: int) -> Tuple[str, bytes]:
    """(partition key, data) of the user record a Result points at, read with
    GetRecords and deaggregated by aws-kinesis-agg."""
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    it = kinesis.get_shard_iterator(
        StreamName=stream,
        ShardId=shard_id,
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=sequence_number,
    )["ShardIterator"]
    records = kinesis.get_records(ShardIterator=it, Limit=1)["Records"]
    assert records and records[0]["SequenceNumber"] == sequence_number
    users = list(iter_deaggregate_records(records, data_format="Boto3"))
    user = users[sub]["kinesis"]
    data = user["data"]
    if user.get("aggregated"):
        data = base64.b64decode(data)
    else:
        assert sub == 0
    return user["partitionKey"], data


def read_all(kinesis: Any, stream: str) -> Dict[Tuple[str, str, int], Tuple[str, bytes]]:
    """Every user record of the stream, (shard, sequence number, sub-sequence
    number) -> (partition key, data): each shard read once from TRIM_HORIZON
    and deaggregated by aws-kinesis-agg. Call it after every put has its
    result."""
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    out: Dict[Tuple[str, str, int], Tuple[str, bytes]] = {}
    for shard_id in shard_ranges(kinesis, stream):
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        while it:
            resp = kinesis.get_records(ShardIterator=it, Limit=10000)
            for record in resp["Records"]:
                for sub, u in enumerate(iter_deaggregate_records([record], data_format="Boto3")):
                    k = u["kinesis"]
                    data = base64.b64decode(k["data"]) if k.get("aggregated") else bytes(k["data"])
                    out[(shard_id, record["SequenceNumber"], sub)] = (k["partitionKey"], data)
            it = resp.get("NextShardIterator")
            # kinesalite returns every stored record without gaps: an empty
            # page means the shard is read to its end.
            if not resp["Records"]:
                break
    return out


def socket_accepts(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Daemon:
    """A `kpld` subprocess with its own config, socket and log in ``directory``."""

    def __init__(self, binary: str, directory: Path, endpoint: str, **settings: Any) -> None:
        self.binary = binary
        self.directory = directory
        self.socket_path = str(directory / "kpld.sock")
        self.settings: Dict[str, Any] = {
            "socket_path": self.socket_path,
            "region": "us-east-1",
            "kinesis_endpoint": endpoint,
            "metrics_level": "none",
            "record_max_buffered_time_ms": 100,
            "record_ttl_ms": 30000,
            "shutdown_grace_ms": 30000,
        }
        self.settings.update(settings)
        self.config_path = directory / "kpld.toml"
        self.config_path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in self.settings.items()))
        self.log_path = directory / "kpld.log"
        self.proc: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
        self.starts = 0

    def start(self) -> "Daemon":
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
        env.pop("AWS_SESSION_TOKEN", None)
        env.pop("AWS_PROFILE", None)
        env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        for key in [k for k in env if k.startswith("KPLD_") and k not in ("KPLD_BIN",)]:
            env.pop(key)  # the config file says everything
        log = open(self.log_path, "ab")
        self.starts += 1
        log.write(f"----- start #{self.starts} -----\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [self.binary, "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not socket_accepts(self.socket_path):
            if self.proc.poll() is not None:
                raise AssertionError(f"kpld exited with {self.proc.returncode} at start:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"kpld's socket did not accept within {STARTUP_TIMEOUT_S} s:\n{self.log()}")
            time.sleep(0.02)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the daemon vanishes without answering anything."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> int:
        """SIGTERM, wait for the exit (generous bound), return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired as e:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"kpld did not exit within {STOP_TIMEOUT_S} s of SIGTERM:\n{self.log()}") from e
        return self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def counted_on_shard(stats: Dict[str, Any], stream: str, shard_id: str) -> int:
    """`user_records_put_total` of one shard in a `daemon_stats()` snapshot (0 when absent)."""
    for s in stats.get("streams", []):
        if s["name"] == stream:
            return {sh["shard_id"]: sh["user_records_put_total"] for sh in s["shards"]}.get(shard_id, 0)
    return 0


def poll(what: str, probe: Any, timeout: float = RESULT_TIMEOUT_S) -> Any:
    """Calls `probe` until it returns something truthy and returns it; fails naming `what`
    after `timeout` (an upper bound, never a speed check)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {got!r}")
        time.sleep(0.1)


def all_results(futures: List[Any]) -> List[Any]:
    return [f.result(timeout=RESULT_TIMEOUT_S) for f in futures]
