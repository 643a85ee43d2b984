"""Who may use kpld's socket, with real second users: the socket file's mode and group
(socket_mode, socket_group), allowed_uids / allowed_gids checked with SO_PEERCRED on every
connection, a stale socket file replaced and a live one never stolen, and credentials kept
out of `--check` output and logs.

A "second user" is a forked copy of this test process that drops to another uid/gid (and
supplementary groups) with setresuid/setresgid before it connects, then runs the real Python
client. The ids need no /etc/passwd entry. This needs root (CAP_SETUID); without it the tests
are skipped on a developer machine and fail under CI.
"""

from __future__ import annotations

import os
import pickle
import socket
import stat
import subprocess
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import _missing
from kinesis_helpers import Put, check_delivery, describe_failures, put_all, read_stream, write_config

OTHER_UID = 4242
OTHER_GID = 4242
SHARED_GID = 4343  # a supplementary group the other user may or may not have
CHILD_TIMEOUT_S = 120


def _need_root() -> None:
    if os.geteuid() != 0:
        _missing("root, to run the client as a second uid (setresuid)")


def run_as(uid: int, gid: int, groups: list[int], fn: Callable[[], Any]) -> Any:
    """Runs `fn` in a forked child as uid/gid with the given supplementary groups and
    returns its result; an exception in the child is re-raised here as an AssertionError
    carrying the child's traceback."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        os.close(r)
        try:
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            out: Any = ("ok", fn())
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            out = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        try:
            data = pickle.dumps(out)
        except Exception as exc:  # an unpicklable result
            data = pickle.dumps(("error", f"unpicklable result: {exc!r}"))
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    if kind == "error":
        raise AssertionError(f"in the child running as uid {uid}: {value}")
    return value


def start(kpld, monkeypatch, **settings: Any):
    """`kpld(**settings)`, with list values (allowed_uids, allowed_gids) passed as KPLD_*
    variables in TOML syntax, the documented override, since the fixture's config writer
    takes scalars only."""
    for key, value in list(settings.items()):
        if isinstance(value, list):
            monkeypatch.setenv(f"KPLD_{key.upper()}", "[" + ", ".join(str(v) for v in value) + "]")
            del settings[key]
    daemon = kpld(**settings)
    open_socket_dir(daemon)
    return daemon


def open_socket_dir(daemon) -> None:
    """The kpld fixture makes the socket's directory 0700 (root only); let others in, so
    that the socket file's own mode and kpld's check are what decide."""
    os.chmod(Path(daemon.socket_path).parent, 0o755)


def put_one_as_child(socket_path: str, stream: str, data: bytes) -> Callable[[], Any]:
    """A child body: put one record with the real client and report what happened."""

    def body() -> dict:
        import kpld

        producer = kpld.Producer(socket_path=socket_path, connect_timeout=60)
        try:
            fut = producer.put_record(stream, data, partition_key="k")
            producer.flush()
            r = fut.result(timeout=CHILD_TIMEOUT_S)
            return {"ok": True, "shard_id": r.shard_id, "sequence_number": r.sequence_number}
        except kpld.KpldError as exc:
            return {
                "ok": False,
                "type": type(exc).__name__,
                "code": getattr(exc, "code", None),
                "message": str(exc),
            }
        finally:
            try:
                producer.close(timeout=10)
            except Exception:
                pass

    return body


def wait_log(daemon, needle: str) -> str:
    """The daemon's log once it holds `needle` (the line is written right after the refusal
    happens; poll generously, never assert on time)."""
    deadline = time.monotonic() + 60
    while True:
        log = daemon.log()
        if needle in log or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# allowed_uids / allowed_gids


def test_uid_not_in_allowed_uids_is_refused_with_access_denied_naming_it(
    kpld, monkeypatch, kpld_client_module, kinesis, make_stream
):
    _need_root()
    stream = make_stream(kinesis, 1)
    daemon = start(kpld, monkeypatch, socket_mode="0666", allowed_uids=[0])

    got = run_as(OTHER_UID, OTHER_GID, [], put_one_as_child(daemon.socket_path, stream, b"no"))

    assert not got["ok"], got
    assert got["code"] == "AccessDenied", got
    assert f"uid {OTHER_UID}" in got["message"], got
    log = wait_log(daemon, f"uid {OTHER_UID}")
    assert "connection refused" in log and f"uid {OTHER_UID}" in log, log[-3000:]
    # Nothing of the refused client reached the stream; the allowed uid (root) still works.
    producer = kpld_client_module.Producer(socket_path=daemon.socket_path)
    try:
        puts = put_all(producer, stream, [Put(b"root-was-allowed", "k")])
    finally:
        producer.close()
    assert puts[0].error is None, describe_failures(puts)
    contents = read_stream(kinesis, stream)
    assert [u.data for u in contents.user_records] == [b"root-was-allowed"]


def test_uid_in_allowed_uids_is_accepted_and_others_including_root_are_not(
    kpld, monkeypatch, kpld_client_module, kinesis, make_stream
):
    _need_root()
    stream = make_stream(kinesis, 1)
    daemon = start(kpld, monkeypatch, socket_mode="0666", allowed_uids=[OTHER_UID])

    got = run_as(OTHER_UID, OTHER_GID, [], put_one_as_child(daemon.socket_path, stream, b"yes"))
    assert got["ok"], got

    producer = kpld_client_module.Producer(socket_path=daemon.socket_path)
    try:
        with pytest.raises(kpld_client_module.KpldError) as refused:
            producer.put_record(stream, b"root-refused", partition_key="k")
    finally:
        producer.close()
    assert getattr(refused.value, "code", None) == "AccessDenied", refused.value
    assert "uid 0" in str(refused.value)

    contents = read_stream(kinesis, stream)
    assert [u.data for u in contents.user_records] == [b"yes"]
    assert contents.user_records[0].sequence_number == got["sequence_number"]


def test_supplementary_group_in_allowed_gids_is_accepted(kpld, monkeypatch, kinesis, make_stream):
    _need_root()
    stream = make_stream(kinesis, 1)
    daemon = start(kpld, monkeypatch, socket_mode="0666", allowed_gids=[SHARED_GID])

    with_group = run_as(
        OTHER_UID, OTHER_GID, [SHARED_GID], put_one_as_child(daemon.socket_path, stream, b"g")
    )
    without = run_as(OTHER_UID, OTHER_GID, [], put_one_as_child(daemon.socket_path, stream, b"n"))

    assert with_group["ok"], with_group
    assert not without["ok"] and without["code"] == "AccessDenied", without
    contents = read_stream(kinesis, stream)
    assert [u.data for u in contents.user_records] == [b"g"]


# ---------------------------------------------------------------------------------------------
# socket_mode / socket_group: the kernel's check


def test_socket_file_gets_mode_and_group_and_the_kernel_enforces_them(
    kpld, monkeypatch, kinesis, make_stream
):
    _need_root()
    stream = make_stream(kinesis, 1)
    daemon = start(kpld, monkeypatch, socket_mode="0660", socket_group=SHARED_GID)

    st = os.stat(daemon.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert st.st_gid == SHARED_GID

    member = run_as(
        OTHER_UID, OTHER_GID, [SHARED_GID], put_one_as_child(daemon.socket_path, stream, b"m")
    )
    stranger = run_as(
        OTHER_UID, OTHER_GID, [], put_one_as_child(daemon.socket_path, stream, b"s")
    )

    assert member["ok"], member
    assert not stranger["ok"] and stranger["type"] == "ConnectionError", stranger
    assert "permission denied" in stranger["message"].lower(), stranger
    contents = read_stream(kinesis, stream)
    assert [u.data for u in contents.user_records] == [b"m"]


def test_default_socket_mode_is_0660(kpld):
    daemon = kpld()
    assert stat.S_IMODE(os.stat(daemon.socket_path).st_mode) == 0o660


def test_bad_socket_mode_is_a_configuration_error(kpld_bin, tmp_path):
    cfg = write_config(tmp_path / "bad.toml", {"socket_path": "/tmp/x.sock", "socket_mode": 660})
    proc = subprocess.run(
        [kpld_bin, "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc
    assert "socket_mode" in proc.stderr and "0660" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------
# the socket file at start: stale replaced, live never stolen


def _start(kpld_bin: str, cfg: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(
            [kpld_bin, "--config", str(cfg)], stdin=subprocess.DEVNULL, stdout=f, stderr=f
        )


def _sock_dir() -> Path:
    d = Path(f"/tmp/kpld-acc-{uuid.uuid4().hex[:10]}")
    d.mkdir(mode=0o700)
    return d


def test_live_socket_is_not_stolen_and_a_stale_one_is_replaced(
    kpld_bin, kinesalite_endpoint, tmp_path
):
    d = _sock_dir()
    path = d / "kpld.sock"
    settings = {
        "socket_path": str(path),
        "region": os.environ.get("AWS_REGION", "us-east-1"),
        "kinesis_endpoint": kinesalite_endpoint,
        "metrics_level": "none",
    }
    cfg = write_config(tmp_path / "k.toml", settings)
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        live.bind(str(path))
        live.listen(8)
        proc = subprocess.run(
            [kpld_bin, "--config", str(cfg)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 1, proc
        assert "another process is already accepting connections" in proc.stderr, proc.stderr
        assert path.exists(), "kpld removed a live socket"
        # The live listener still gets connections: nothing was replaced.
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(path))
        conn, _ = live.accept()
        conn.close()
        c.close()
    finally:
        live.close()  # leaves the file: now a stale socket, as after a crash

    proc2 = _start(kpld_bin, cfg, tmp_path / "k2.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(path))
                break
            except OSError:
                assert proc2.poll() is None, (tmp_path / "k2.log").read_text()
                assert time.monotonic() < deadline, "kpld did not take over the stale socket"
                time.sleep(0.05)
            finally:
                s.close()
    finally:
        proc2.terminate()
        assert proc2.wait(timeout=90) == 0, (tmp_path / "k2.log").read_text()
    assert not path.exists(), "kpld did not remove its own socket file at exit"
    d.rmdir()


def test_a_file_that_is_not_a_socket_is_never_replaced(kpld_bin, tmp_path):
    d = _sock_dir()
    path = d / "kpld.sock"
    path.write_text("precious")
    cfg = write_config(tmp_path / "k.toml", {"socket_path": str(path), "region": "us-east-1"})
    proc = subprocess.run(
        [kpld_bin, "--config", str(cfg)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc
    assert "is not a socket" in proc.stderr, proc.stderr
    assert path.read_text() == "precious"
    path.unlink()
    d.rmdir()


# ---------------------------------------------------------------------------------------------
# credentials stay secret


SECRET = "kpldTestSecret/" + "x" * 24
SESSION_TOKEN = "kpldTestSessionToken" + "y" * 40
ACCESS_KEY_ID = "AKIAKPLDTESTKEY12345"


def test_credentials_never_appear_in_check_output_or_logs(
    kpld_bin, kinesalite_endpoint, kinesis, make_stream, tmp_path, kpld_client_module
):
    stream = make_stream(kinesis, 1)
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_SESSION_TOKEN=SESSION_TOKEN,
        RUST_LOG="trace",
    )
    d = _sock_dir()
    settings = {
        "socket_path": str(d / "kpld.sock"),
        "region": "us-east-1",
        "kinesis_endpoint": kinesalite_endpoint,
        "metrics_level": "none",
        "log_level": "trace",
    }
    cfg = write_config(tmp_path / "k.toml", settings)

    check = subprocess.run(
        [kpld_bin, "--config", str(cfg), "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert check.returncode == 0, check
    out = check.stdout + check.stderr
    assert "credentials: found" in out, out
    for secret in (SECRET, SESSION_TOKEN, ACCESS_KEY_ID):
        assert secret not in out, f"--check printed a credential: {out}"

    log = tmp_path / "trace.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [kpld_bin, "--config", str(cfg)], stdout=f, stderr=f, env=env, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + 60
        while not (d / "kpld.sock").exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        producer = kpld_client_module.Producer(socket_path=str(d / "kpld.sock"))
        try:
            puts = put_all(producer, stream, [Put(b"secret-test", "k")])
        finally:
            producer.close()
        assert puts[0].error is None, describe_failures(puts)
    finally:
        proc.terminate()
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
        d.rmdir()
    text = log.read_text(errors="replace")
    assert "PutRecords" in text or "put_records" in text.lower(), "trace log too quiet to prove anything"
    for secret in (SECRET, SESSION_TOKEN):
        assert secret not in text, "a credential appeared in the daemon's trace log"
    check_delivery(puts, read_stream(kinesis, stream))
