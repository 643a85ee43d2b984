"""Metrics of the real kpld, read back through real consumers:

- CloudWatch: PutMetricData uploads reach a real CloudWatch-compatible server (moto, started by
  scripts/test.sh as `moto_server -p PORT`, URL in KPLD_TEST_MOTO_ENDPOINT) and are read back
  with list_metrics / get_metric_statistics: the KPL's names, units, dimension sets and values.
- Prometheus: a scrape of `metrics_prometheus_addr` parsed by prometheus_client's own parser.
- EMF: every line of `metrics_emf_path` validated against the Embedded Metric Format's
  published JSON schema plus the rules the schema cannot express.
- `kpld stats --json` and the live table, against the running daemon.

Values are checked where they are exact: moto matches dimension *supersets* in
get_metric_statistics (CloudWatch matches exact sets), so a stream-level series is read back
exactly only where no shard-level series exists (granularity "stream"), and shard-level
series are read back exactly at granularity "shard".
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from typing import Any, Optional

import boto3
import pytest
from botocore.config import Config

from kinesis_helpers import Put, describe_failures, put_all, stats, wait_for

MOTO_ENV = "KPLD_TEST_MOTO_ENDPOINT"
WAIT_S = 120  # generous upper bound for anything polled; never asserted as a duration

# The KPL's metrics by level (aws/metrics/metrics_constants.cc).
SUMMARY = {
    "UserRecordsPut",
    "KinesisRecordsPut",
    "ErrorsByCode",
    "AllErrors",
    "UserRecordExpired",
    "BufferingTime",
}
DETAILED = SUMMARY | {
    "UserRecordsReceived",
    "UserRecordsPending",
    "UserRecordsDataPut",
    "KinesisRecordsDataPut",
    "RetriesPerRecord",
    "RequestTime",
    "UserRecordsPerKinesisRecord",
    "KinesisRecordsPerPutRecordsRequest",
    "UserRecordsPerPutRecordsRequest",
}
# kpld's own, for `[[files]]`: per stream and file path (StreamName, FilePath).
FILE_SUMMARY = {"FileLinesRead", "FileBytesBehind", "FileParseErrors"}
FILE_METRICS = FILE_SUMMARY | {"FileRecordsSent", "FileLongLines", "FileRotations"}
# Metrics a clean run (no errors, no expiry) records.
CLEAN_RUN = DETAILED - {"ErrorsByCode", "UserRecordExpired"}
UNITS = {
    "UserRecordsDataPut": "Bytes",
    "KinesisRecordsDataPut": "Bytes",
    "BufferingTime": "Milliseconds",
    "RequestTime": "Milliseconds",
}
FILE_UNITS = {"FileBytesBehind": "Bytes"}
# Metrics the KPL records per PutRecords call: stream level only.
STREAM_ONLY = {
    "UserRecordsReceived",
    "UserRecordsPending",
    "RequestTime",
    "KinesisRecordsPerPutRecordsRequest",
    "UserRecordsPerPutRecordsRequest",
}


# ---------------------------------------------------------------------------------------------
# helpers


def _missing(what: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"prerequisite missing under CI: {what}", pytrace=False)
    pytest.skip(f"prerequisite missing: {what}")


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    url = os.environ.get(MOTO_ENV, "")
    if not url:
        _missing(f"environment variable {MOTO_ENV} (scripts/test.sh starts moto_server)")
    return url


@pytest.fixture(scope="session")
def cloudwatch(moto_endpoint):
    return boto3.client(
        "cloudwatch",
        endpoint_url=moto_endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


def namespace() -> str:
    return f"kpld-test-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_puts(n: int, hot_every: int = 0) -> list[Put]:
    """n records of varied sizes; every `hot_every`-th one (if set) under the key "hot-key"."""
    puts = []
    for i in range(n):
        key = "hot-key" if hot_every and i % hot_every == 0 else f"user-{i}"
        puts.append(Put(data=f"m-{i:05d}|".encode() + b"x" * (i % 50), partition_key=key))
    return puts


def put_ok(producer, stream: str, puts: list[Put]) -> list[Put]:
    put_all(producer, stream, puts)
    assert all(p.error is None for p in puts), describe_failures(puts)
    return puts


def by_shard(puts: list[Put]) -> dict[str, list[Put]]:
    out: dict[str, list[Put]] = defaultdict(list)
    for p in puts:
        out[p.result.shard_id].append(p)
    return out


def stop(daemon) -> None:
    """SIGTERM: the daemon drains, uploads (or writes) its last interval, and exits 0."""
    rc = daemon.terminate()
    assert rc == 0, f"kpld exited with {rc}; log:\n{daemon.log()[-6000:]}"


def all_metrics(cw, ns: str) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """MetricName -> the dimension sets (as sorted (name, value) tuples) in namespace `ns`."""
    out: dict[str, set] = defaultdict(set)
    for page in cw.get_paginator("list_metrics").paginate(Namespace=ns):
        for m in page["Metrics"]:
            dims = tuple(sorted((d["Name"], d["Value"]) for d in m.get("Dimensions", [])))
            out[m["MetricName"]].add(dims)
    return out


def statistics(cw, ns: str, name: str, dims: dict[str, str]) -> dict[str, Any]:
    """Sum and SampleCount over every datapoint of the series (and its units)."""
    now = dt.datetime.now(dt.timezone.utc)
    r = cw.get_metric_statistics(
        Namespace=ns,
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=now - dt.timedelta(hours=1),
        EndTime=now + dt.timedelta(hours=1),
        Period=60,
        Statistics=["Sum", "SampleCount", "Minimum", "Maximum"],
    )
    points = r["Datapoints"]
    return {
        "sum": sum(p["Sum"] for p in points),
        "count": sum(p["SampleCount"] for p in points),
        "min": min((p["Minimum"] for p in points), default=None),
        "max": max((p["Maximum"] for p in points), default=None),
        "units": {p.get("Unit") for p in points},
    }


# ---------------------------------------------------------------------------------------------
# CloudWatch (moto)


def test_cloudwatch_upload_has_the_kpl_names_dimensions_and_values(
    kpld, producers, kinesis, make_stream, cloudwatch, moto_endpoint
):
    stream = make_stream(kinesis, 2)
    ns = namespace()
    daemon = kpld(
        cloudwatch_endpoint=moto_endpoint,
        metrics_namespace=ns,
        metrics_upload_delay_ms=1000,
    )
    puts = put_ok(producers(daemon), stream, make_puts(400))
    # An interval upload reaches the server while the daemon runs...
    wait_for("a periodic upload", lambda: all_metrics(cloudwatch, ns).get("UserRecordsPut"))
    # ...and the last interval is uploaded at shutdown, so the totals below are complete.
    stop(daemon)

    metrics = all_metrics(cloudwatch, ns)
    assert set(metrics) == CLEAN_RUN, sorted(metrics)
    shards = by_shard(puts)
    assert len(shards) == 2
    stream_dims = (("StreamName", stream),)
    for name, sets in metrics.items():
        expected = {(), stream_dims}
        if name not in STREAM_ONLY:
            expected |= {(("ShardId", s), ("StreamName", stream)) for s in shards}
        assert sets == expected, (name, sets)

    for shard, recs in shards.items():
        dims = {"StreamName": stream, "ShardId": shard}
        put = statistics(cloudwatch, ns, "UserRecordsPut", dims)
        assert (put["sum"], put["count"]) == (len(recs), len(recs)), (shard, put)
        assert put["units"] == {"Count"}
        data = statistics(cloudwatch, ns, "UserRecordsDataPut", dims)
        assert data["sum"] == sum(len(p.data) for p in recs)
        assert data["min"] == min(len(p.data) for p in recs)
        assert data["max"] == max(len(p.data) for p in recs)
        assert data["units"] == {"Bytes"}
        retries = statistics(cloudwatch, ns, "RetriesPerRecord", dims)
        assert (retries["sum"], retries["count"]) == (0, len(recs))
        buffering = statistics(cloudwatch, ns, "BufferingTime", dims)
        assert buffering["count"] == len(recs)  # one attempt each
        assert buffering["units"] == {"Milliseconds"}
        kput = statistics(cloudwatch, ns, "KinesisRecordsPut", dims)
        assert kput["count"] > 0 and kput["sum"] == kput["count"], kput
        errors = statistics(cloudwatch, ns, "AllErrors", dims)
        assert errors["sum"] == 0 and errors["count"] == kput["count"]
        per_kr = statistics(cloudwatch, ns, "UserRecordsPerKinesisRecord", dims)
        assert per_kr["sum"] == len(recs)
        kdata = statistics(cloudwatch, ns, "KinesisRecordsDataPut", dims)
        assert kdata["sum"] >= data["sum"]
    for name, unit in UNITS.items():
        assert statistics(cloudwatch, ns, name, {"StreamName": stream})["units"] == {unit}


def test_summary_level_at_stream_granularity_counts_every_record_of_the_stream(
    kpld, producers, kinesis, make_stream, cloudwatch, moto_endpoint
):
    stream = make_stream(kinesis, 3)
    missing = f"kpld-test-missing-{uuid.uuid4().hex[:8]}"
    ns = namespace()
    daemon = kpld(
        cloudwatch_endpoint=moto_endpoint,
        metrics_namespace=ns,
        metrics_level="summary",
        metrics_granularity="stream",
    )
    producer = producers(daemon)
    put_ok(producer, stream, make_puts(300))
    # Records for a stream that does not exist fail: the "Put" metric records 0 for them,
    # so its average is the success rate.
    lost = put_all(producer, missing, make_puts(20))
    assert all(p.error is not None for p in lost)
    stop(daemon)

    metrics = all_metrics(cloudwatch, ns)
    assert set(metrics) <= SUMMARY, sorted(metrics)
    assert {"UserRecordsPut", "KinesisRecordsPut", "AllErrors", "BufferingTime"} <= set(metrics)
    assert all(
        name != "ShardId" for sets in metrics.values() for dims in sets for name, _ in dims
    ), metrics
    assert metrics["UserRecordsPut"] == {(), (("StreamName", stream),), (("StreamName", missing),)}
    # No shard-level series exist, so the stream-level ones read back exactly: a shard-level
    # value counts in its stream's series.
    ok = statistics(cloudwatch, ns, "UserRecordsPut", {"StreamName": stream})
    assert (ok["sum"], ok["count"]) == (300, 300)
    failed = statistics(cloudwatch, ns, "UserRecordsPut", {"StreamName": missing})
    assert (failed["sum"], failed["count"]) == (0, 20)


def test_level_none_uploads_nothing_but_stats_still_show_the_shards(
    kpld, producers, kinesis, make_stream, cloudwatch, moto_endpoint
):
    stream = make_stream(kinesis, 2)
    ns = namespace()
    daemon = kpld(cloudwatch_endpoint=moto_endpoint, metrics_namespace=ns, metrics_level="none")
    producer = producers(daemon)
    puts = put_ok(producer, stream, make_puts(200))

    def shards_seen():
        s = producer.daemon_stats()
        streams = [x for x in s["streams"] if x["name"] == stream]
        total = sum(sh["user_records_put_total"] for x in streams for sh in x["shards"])
        return s if total == len(puts) else None

    snapshot = wait_for("the stats snapshot", shards_seen)
    assert snapshot["metrics"]["level"] == "none"
    stream_stats = next(x for x in snapshot["streams"] if x["name"] == stream)
    assert stream_stats["buffering_time_ms"] is None  # not recorded at level none
    assert {sh["shard_id"] for sh in stream_stats["shards"]} == set(by_shard(puts))
    stop(daemon)
    assert all_metrics(cloudwatch, ns) == {}


def test_cloudwatch_off_uploads_nothing_while_prometheus_keeps_every_series(
    kpld, producers, kinesis, make_stream, cloudwatch, moto_endpoint
):
    stream = make_stream(kinesis, 2)
    ns = namespace()
    port = free_port()
    # The sinks are independent of the level: CloudWatch off, Prometheus on, level detailed.
    daemon = kpld(
        cloudwatch_endpoint=moto_endpoint,
        metrics_namespace=ns,
        metrics_upload_delay_ms=1000,
        metrics_cloudwatch=False,
        metrics_prometheus_addr=f"127.0.0.1:{port}",
    )
    puts = put_ok(producers(daemon), stream, make_puts(100))

    def counted():
        status, _, text = scrape(port)
        lines = [l for l in text.splitlines() if l.startswith("kpld_user_records_put_count")]
        return status == 200 and sum(float(l.split()[-1]) for l in lines) == len(puts)

    wait_for("every record in the Prometheus scrape", counted)
    # Several upload intervals pass: none of them reaches CloudWatch.
    time.sleep(3)
    stop(daemon)
    assert all_metrics(cloudwatch, ns) == {}
    assert "cloudwatch=false" in daemon.log(), daemon.log()[-3000:]


# ---------------------------------------------------------------------------------------------
# Prometheus


def scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def test_prometheus_scrape_parses_with_prometheus_client(
    kpld, producers, kinesis, make_stream, tmp_path
):
    from prometheus_client.parser import text_string_to_metric_families

    stream = make_stream(kinesis, 2)
    port = free_port()
    # EMF to a file instead of PutMetricData: this test needs no CloudWatch.
    daemon = kpld(
        metrics_prometheus_addr=f"127.0.0.1:{port}",
        metrics_emf_path=str(tmp_path / "emf.log"),
    )
    puts = put_ok(producers(daemon), stream, make_puts(400, hot_every=2))
    shards = by_shard(puts)

    def parsed_when_complete():
        status, ctype, text = scrape(port)
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        put = families.get("kpld_user_records_put")
        done = put and sum(s.value for s in put.samples if s.name.endswith("_count")) == len(puts)
        return families if done else None

    families = wait_for("all records in the scrape", parsed_when_complete)
    put = families["kpld_user_records_put"]
    assert put.type == "summary"
    counts = {s.labels["shard"]: s.value for s in put.samples if s.name.endswith("_count")}
    assert counts == {shard: len(recs) for shard, recs in shards.items()}
    assert all(s.labels["stream"] == stream for s in put.samples)
    assert sum(s.value for s in put.samples if s.name.endswith("_sum")) == len(puts)

    data = families["kpld_user_records_data_put_bytes"]
    assert sum(s.value for s in data.samples if s.name.endswith("_sum")) == sum(
        len(p.data) for p in puts
    )
    buffering = families["kpld_buffering_time_seconds"]
    quantiles = {s.labels["quantile"] for s in buffering.samples if "quantile" in s.labels}
    assert quantiles == {"0.5", "0.9", "0.99", "0.999"}
    assert all(s.value >= 0 for s in buffering.samples)

    rate = families["kpld_shard_records_per_second"]
    assert rate.type == "gauge"
    assert {s.labels["shard"] for s in rate.samples} == set(shards)
    assert families["kpld_shard_throttles"].type == "counter"  # parsed from ..._total
    hot = [s for s in families["kpld_partition_key_share"].samples if s.labels["key"] == "hot-key"]
    assert len(hot) == 1 and 0.5 < hot[0].value <= 1.0, families["kpld_partition_key_share"]
    hot_shard = next(p.result.shard_id for p in puts if p.partition_key == "hot-key")
    assert hot[0].labels["shard"] == hot_shard

    assert scrape(port, "/nothing")[0] == 404


# ---------------------------------------------------------------------------------------------
# EMF

# The published JSON schema of the Embedded Metric Format (CloudWatch user guide,
# "Specification: Embedded metric format").
EMF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Root Node",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "title": "Metadata",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer"},
                "CloudWatchMetrics": {
                    "type": "array",
                    "title": "MetricDirectives",
                    "items": {
                        "type": "object",
                        "title": "MetricDirective",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {
                                "type": "string",
                                "pattern": "^(.*)$",
                                "minLength": 1,
                                "maxLength": 255,
                            },
                            "Dimensions": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "array",
                                    "title": "DimensionSet",
                                    "minItems": 0,
                                    "maxItems": 9,
                                    "items": {
                                        "type": "string",
                                        "pattern": "^(.*)$",
                                        "minLength": 1,
                                        "maxLength": 255,
                                    },
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "title": "MetricDefinition",
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": {
                                            "type": "string",
                                            "pattern": "^(.*)$",
                                            "minLength": 1,
                                            "maxLength": 255,
                                        },
                                        "Unit": {
                                            "type": "string",
                                            "pattern": "^(Seconds|Microseconds|Milliseconds|Bytes|Kilobytes|Megabytes|Gigabytes|Terabytes|Bits|Kilobits|Megabits|Gigabits|Terabits|Percent|Count|Bytes\\/Second|Kilobytes\\/Second|Megabytes\\/Second|Gigabytes\\/Second|Terabytes\\/Second|Bits\\/Second|Kilobits\\/Second|Megabits\\/Second|Gigabits\\/Second|Terabits\\/Second|Count\\/Second|None)$",
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def check_metric_value(name: str, v: Any) -> None:
    """A metric target: a number, an array of at most 100 numbers, or the statistic-set /
    histogram object AWS's EMF libraries emit ({Max, Min, Count, Sum} and optionally
    Values/Counts with at most 100 bins), which must describe a possible set of values."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return
    if isinstance(v, list):
        assert len(v) <= 100 and all(isinstance(x, (int, float)) for x in v), (name, v)
        return
    assert isinstance(v, dict), (name, v)
    assert set(v) in ({"Max", "Min", "Count", "Sum"}, {"Values", "Counts", "Max", "Min", "Count", "Sum"}), (name, v)
    mx, mn, count, total = v["Max"], v["Min"], v["Count"], v["Sum"]
    assert isinstance(count, int) and count > 0, (name, v)
    assert mn <= mx, (name, v)
    assert mn * count - 1e-6 <= total <= mx * count + 1e-6, (name, v)
    if count == 1:
        assert mn == mx == total, (name, v)
    if "Values" in v:
        values, counts = v["Values"], v["Counts"]
        assert 0 < len(values) == len(counts) <= 100, (name, v)
        assert sum(counts) == count, (name, v)
        assert all(mn <= x <= mx for x in values), (name, v)


def test_emf_lines_follow_the_embedded_metric_format(
    kpld, producers, kinesis, make_stream, tmp_path
):
    import jsonschema

    stream = make_stream(kinesis, 2)
    path = tmp_path / "metrics.emf"
    ns = namespace()
    daemon = kpld(metrics_emf_path=str(path), metrics_namespace=ns, metrics_upload_delay_ms=1000)
    puts = put_ok(producers(daemon), stream, make_puts(300))
    stop(daemon)

    lines = path.read_text().splitlines()
    assert lines, "no EMF line written"
    validator = jsonschema.Draft7Validator(EMF_SCHEMA)
    totals: Counter = Counter()
    shard_docs = set()
    for line in lines:
        doc = json.loads(line)
        errors = sorted(validator.iter_errors(doc), key=str)
        assert not errors, (line, [e.message for e in errors])
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == ns
            assert len(directive["Metrics"]) <= 100
            for dimension_set in directive["Dimensions"]:
                for key in dimension_set:
                    assert isinstance(doc.get(key), str), (key, line)
            for m in directive["Metrics"]:
                assert m["Name"] in DETAILED
                assert m.get("Unit") == UNITS.get(m["Name"], "Count")
                check_metric_value(m["Name"], doc[m["Name"]])
            dims = tuple(directive["Dimensions"][0])
            if dims == ("StreamName",) and doc["StreamName"] == stream:
                totals["put_sum"] += doc["UserRecordsPut"]["Sum"]
                totals["put_count"] += doc["UserRecordsPut"]["Count"]
                buffering = doc["BufferingTime"]
                assert "Values" in buffering, "stream-level times carry their histogram"
                totals["buffering_count"] += buffering["Count"]
            if dims == ("StreamName", "ShardId"):
                shard_docs.add(doc["ShardId"])
    assert (totals["put_sum"], totals["put_count"]) == (300, 300)
    assert totals["buffering_count"] == 300
    assert shard_docs == set(by_shard(puts))


# ---------------------------------------------------------------------------------------------
# kpld stats


def test_kpld_stats_prints_a_json_snapshot_and_a_live_table(
    kpld, kpld_bin, producers, kinesis, make_stream, tmp_path
):
    stream = make_stream(kinesis, 2)
    daemon = kpld(metrics_emf_path=str(tmp_path / "emf.log"))
    puts = put_ok(producers(daemon), stream, make_puts(300, hot_every=2))
    hot_shard = next(p.result.shard_id for p in puts if p.partition_key == "hot-key")

    def snapshot() -> Optional[dict]:
        s = stats(kpld_bin, daemon)
        st = [x for x in s["streams"] if x["name"] == stream]
        return s if st and st[0]["user_records_put_total"] == len(puts) else None

    s = wait_for("kpld stats --json", snapshot)
    assert s["outstanding_records"] == 0
    st = next(x for x in s["streams"] if x["name"] == stream)
    assert st["received_total"] == len(puts) and st["pending"] == 0
    assert isinstance(st["buffering_time_ms"]["p99"], int)
    shards = {sh["shard_id"]: sh for sh in st["shards"]}
    assert set(shards) == set(by_shard(puts))
    for shard_id, recs in by_shard(puts).items():
        assert shards[shard_id]["user_records_put_total"] == len(recs)
        assert shards[shard_id]["kinesis_records_total"] >= 1
    assert [k["key"] for k in shards[hot_shard]["top_keys"]][:1] == ["hot-key"]

    # The live table: refreshed once a second until Ctrl-C (SIGINT), then exit 0.
    proc = subprocess.Popen(
        [kpld_bin, "stats", "--socket", daemon.socket_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if hot_shard in line and "hot-key" in line:
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert found.wait(WAIT_S), "".join(seen[-40:])
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    assert rc == 0, proc.stderr.read() if proc.stderr else rc
    assert any(stream in line for line in seen)

    missing = subprocess.run(
        [kpld_bin, "stats", "--socket", str(tmp_path / "none.sock"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "none.sock" in missing.stderr


# ---------------------------------------------------------------------------------------------
# [[files]]: the file metrics


def files_daemon(kpld, kinesis, make_stream, tmp_path, **kw):
    """kpld reading two log files of known lines (one a parse error) into a new stream."""
    stream = make_stream(kinesis, 2)
    logs = tmp_path / "logs"
    logs.mkdir()
    a, b = logs / "a.log", logs / "b.log"
    a.write_text("".join(f"{i},x\n" for i in range(300)))
    b.write_text("".join(f"{i},y\n" for i in range(199)) + '9,"unterminated\n')
    table = {
        "paths": [f"{logs}/*.log"],
        "stream": stream,
        "start_at": "beginning",
        "poll_interval_ms": 50,
        "checkpoint_interval_ms": 100,
        "processing": [{"kind": "csv_to_json", "fields": ["n", "v"]}],
    }
    daemon = kpld(state_dir=str(tmp_path / "state"), files=[table], **kw)
    return daemon, stream, {str(a): (300, 0), str(b): (200, 1)}


def files_done(kpld_bin, daemon, files: dict) -> None:
    def done():
        got = stats(kpld_bin, daemon).get("files") or []
        return len(got) == len(files) and all(
            f["bytes_behind"] == 0 and f["lines"] == files[f["path"]][0] for f in got
        )

    wait_for("every file read and acknowledged", done)


def test_cloudwatch_upload_has_a_series_per_file_with_its_lines_errors_and_lag(
    kpld, kpld_bin, kinesis, make_stream, cloudwatch, moto_endpoint, tmp_path
):
    ns = namespace()
    daemon, stream, files = files_daemon(
        kpld,
        kinesis,
        make_stream,
        tmp_path,
        cloudwatch_endpoint=moto_endpoint,
        metrics_namespace=ns,
        metrics_upload_delay_ms=1000,
    )
    files_done(kpld_bin, daemon, files)
    stop(daemon)

    metrics = all_metrics(cloudwatch, ns)
    assert {"FileLinesRead", "FileRecordsSent", "FileBytesBehind", "FileParseErrors"} <= set(
        metrics
    ), sorted(metrics)
    assert not {"FileLongLines", "FileRotations"} & set(metrics), "nothing counted, not sent"
    per_file = {((("FilePath", p), ("StreamName", stream))) for p in files}
    assert metrics["FileLinesRead"] == {(), (("StreamName", stream),)} | per_file
    for path, (lines, errors) in files.items():
        dims = {"StreamName": stream, "FilePath": path}
        read = statistics(cloudwatch, ns, "FileLinesRead", dims)
        assert (read["sum"], read["units"]) == (lines, {"Count"}), (path, read)
        assert statistics(cloudwatch, ns, "FileRecordsSent", dims)["sum"] == lines
        behind = statistics(cloudwatch, ns, "FileBytesBehind", dims)
        assert behind["count"] >= 1 and behind["min"] == 0 and behind["units"] == {"Bytes"}
        if errors:
            assert statistics(cloudwatch, ns, "FileParseErrors", dims)["sum"] == errors
    assert (("FilePath", str(tmp_path / "logs" / "a.log")), ("StreamName", stream)) not in metrics[
        "FileParseErrors"
    ], "a file without parse errors has no such series"


def test_emf_lines_name_each_file_and_stream_granularity_keeps_only_their_totals(
    kpld, kpld_bin, kinesis, make_stream, tmp_path
):
    import jsonschema

    validator = jsonschema.Draft7Validator(EMF_SCHEMA)
    for granularity in ("shard", "stream"):
        here = tmp_path / granularity
        here.mkdir()
        path = here / "metrics.emf"
        daemon, stream, files = files_daemon(
            kpld,
            kinesis,
            make_stream,
            here,
            metrics_emf_path=str(path),
            metrics_upload_delay_ms=1000,
            metrics_granularity=granularity,
        )
        files_done(kpld_bin, daemon, files)
        stop(daemon)
        per_file: Counter = Counter()
        behind: dict[str, float] = {}
        stream_lines = 0
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            errors = sorted(validator.iter_errors(doc), key=str)
            assert not errors, (line, [e.message for e in errors])
            directive = doc["_aws"]["CloudWatchMetrics"][0]
            dims = tuple(directive["Dimensions"][0])
            for m in directive["Metrics"]:
                assert m["Name"] in DETAILED | FILE_METRICS, m
                assert m.get("Unit") == {**UNITS, **FILE_UNITS}.get(m["Name"], "Count")
                check_metric_value(m["Name"], doc[m["Name"]])
            if dims == ("StreamName", "FilePath") and doc["StreamName"] == stream:
                per_file[doc["FilePath"]] += doc.get("FileLinesRead", {}).get("Sum", 0)
                if "FileBytesBehind" in doc:
                    behind[doc["FilePath"]] = doc["FileBytesBehind"]["Min"]
            if dims == ("StreamName",) and doc["StreamName"] == stream:
                stream_lines += doc.get("FileLinesRead", {}).get("Sum", 0)
        assert stream_lines == 500, granularity
        if granularity == "shard":
            assert per_file == {p: n for p, (n, _) in files.items()}
            # The last interval (at shutdown) has each file's lag: all acknowledged.
            assert behind == {p: 0 for p in files}
        else:
            assert per_file == {}, "no series per file below shard granularity"
