"""kpld under systemd: the unit files, socket activation with the real
`systemd-socket-activate` (records through the inherited socket, a restart that loses
nothing because the listening socket outlives the daemon), and sd_notify readiness,
status, watchdog and stopping messages.

Tools: `systemd-analyze`, `systemd-sysusers` and `systemd-socket-activate` come with
Debian's `systemd` package (installed by .ci/run). No running systemd (PID 1) is needed:
`systemd-socket-activate` speaks the same LISTEN_FDS protocol as a .socket unit, and a
datagram socket we bind stands in for the manager's $NOTIFY_SOCKET.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import pytest

from conftest import _missing
from kinesis_helpers import (
    Put,
    check_delivery,
    collect,
    describe_failures,
    put_all,
    read_stream,
    submit,
    write_config,
)

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
WAIT_S = 120  # generous upper bound for anything to happen; never asserted as a duration


def require_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not path:
        _missing(f"{name} (Debian package systemd)")
    return path  # type: ignore[return-value]


def wait_until(cond, what: str, proc: Optional[subprocess.Popen] = None, log: Optional[Path] = None):
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"process exited ({proc.returncode}) while waiting for {what}; log:\n"
                + (log.read_text(errors="replace")[-5000:] if log else "")
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"gave up waiting for {what}; log:\n"
                + (log.read_text(errors="replace")[-5000:] if log else "")
            )
        time.sleep(0.05)


def short_dir(prefix: str) -> Path:
    """A fresh directory with a short path (a socket path must fit in 107 bytes)."""
    d = Path(f"/tmp/{prefix}-{uuid.uuid4().hex[:10]}")
    d.mkdir(mode=0o700)
    return d


def remove_tree(d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)


def is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def activator_env_flags() -> list[str]:
    """`-E NAME` for each variable kpld needs: systemd-socket-activate starts the program
    with an empty environment plus these (values are taken from our environment, so no
    credential ever appears on a command line)."""
    flags = []
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_EC2_METADATA_DISABLED",
        "RUST_LOG",
    ):
        if name in os.environ:
            flags += ["-E", name]
    return flags


def daemon_settings(socket_path: str, endpoint: str, **extra) -> dict:
    s = {
        "socket_path": socket_path,
        "region": os.environ.get("AWS_REGION", "us-east-1"),
        "kinesis_endpoint": endpoint,
        "metrics_level": "none",
        "record_max_buffered_time_ms": 100,
        "record_ttl_ms": 120000,
        "shutdown_grace_ms": 60000,
    }
    s.update(extra)
    return s


# ---------------------------------------------------------------------------------------------
# the unit files


def test_units_pass_systemd_analyze_verify(kpld_bin, tmp_path):
    analyze = require_tool("systemd-analyze")
    # ExecStart must name an existing executable: point it at the binary under test.
    for name in ("kpld.service", "kpld.socket"):
        text = (UNITS / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/kpld", kpld_bin))
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "kpld.socket"), str(tmp_path / "kpld.service")],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    ours = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if "kpld.service" in line or "kpld.socket" in line or str(tmp_path) in line
    ]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_sysusers_file_is_valid(tmp_path):
    sysusers = require_tool("systemd-sysusers")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / f).write_text("")
    proc = subprocess.run(
        [sysusers, "--dry-run", f"--root={root}", str(UNITS / "kpld.sysusers")],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Creating user 'kpld'" in out and "Creating group 'kpld'" in out, out


def test_example_config_is_valid_and_documents_every_key(kpld_bin):
    example = UNITS / "kpld.toml.example"
    env = dict(os.environ)
    env.setdefault("AWS_REGION", "us-east-1")
    proc = subprocess.run(
        [kpld_bin, "--config", str(example), "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=WAIT_S,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = set(re.findall(r"^([a-z_]+) = ", proc.stdout, re.M))
    assert "socket_mode" in printed and "allowed_uids" in printed, proc.stdout
    documented = set(re.findall(r"^#? ?([a-z_]+) = ", example.read_text(), re.M))
    missing = printed - documented
    assert not missing, f"keys kpld knows but kpld.toml.example does not document: {missing}"
    text = example.read_text()
    for optional in ("region", "kinesis_endpoint", "streams_allowed", "socket_group"):
        assert re.search(rf"^# {optional} = ", text, re.M), f"{optional} is not documented"
    assert "[streams." in text


def test_stop_timeout_exceeds_the_example_shutdown_grace():
    service = (UNITS / "kpld.service").read_text()
    example = (UNITS / "kpld.toml.example").read_text()
    stop_s = int(re.search(r"^TimeoutStopSec=(\d+)s$", service, re.M).group(1))
    grace_ms = int(re.search(r"^shutdown_grace_ms = (\d+)$", example, re.M).group(1))
    # The drain may take the grace period plus up to 5 s for connections to close.
    assert stop_s * 1000 > grace_ms + 5000, (stop_s, grace_ms)
    assert re.search(r"^Type=notify$", service, re.M)
    assert re.search(r"^WatchdogSec=", service, re.M)


# ---------------------------------------------------------------------------------------------
# socket activation


@pytest.fixture
def sock_dir():
    d = short_dir("kpld-sa")
    yield d
    remove_tree(d)


def test_socket_activation_starts_kpld_on_first_connection(
    kpld_bin, kinesalite_endpoint, kinesis, make_stream, kpld_client_module, sock_dir, tmp_path
):
    activate = require_tool("systemd-socket-activate")
    stream = make_stream(kinesis, 2)
    path = sock_dir / "kpld.sock"
    # socket_path names another file: with an inherited socket it must not be used.
    cfg = write_config(
        tmp_path / "k.toml", daemon_settings(str(sock_dir / "unused.sock"), kinesalite_endpoint)
    )
    log = tmp_path / "activate.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [activate, "-l", str(path), *activator_env_flags(), kpld_bin, "--config", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=f,
        )
    try:
        wait_until(lambda: is_socket(path), "the activator's socket", proc, log)
        # No connection yet: kpld has not been started.
        assert os.path.basename(os.readlink(f"/proc/{proc.pid}/exe")) == "systemd-socket-activate"

        producer = kpld_client_module.Producer(socket_path=str(path), connect_timeout=WAIT_S)
        try:
            puts = [Put(f"activated-{i}".encode(), f"k{i}") for i in range(50)]
            put_all(producer, stream, puts)
        finally:
            producer.close()
        assert all(p.error is None for p in puts), describe_failures(puts)
        # The first connection made the activator exec kpld with the listening socket.
        assert os.path.realpath(f"/proc/{proc.pid}/exe") == os.path.realpath(kpld_bin)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=WAIT_S)
    text = log.read_text(errors="replace")
    assert rc == 0, text[-5000:]
    assert "passed by the service manager" in text, text[-5000:]
    assert is_socket(path), "kpld removed the socket file that belongs to the socket unit"
    assert not (sock_dir / "unused.sock").exists(), "kpld bound socket_path despite LISTEN_FDS"
    check_delivery(puts, read_stream(kinesis, stream))


# The holder: systemd-socket-activate binds the socket and, on the first connection, execs
# this shell with the socket as fd 3. The shell keeps fd 3 open (as systemd keeps a .socket
# unit's socket) and runs kpld twice; each kpld gets LISTEN_PID = its own pid (the inner sh
# sets it, then execs kpld, keeping the pid). The second kpld starts only once the test
# writes to the FIFO "gate", so the test controls the window in which no kpld runs.
HOLDER = r"""
i=1
while [ "$i" -le 2 ]; do
  if [ "$i" -gt 1 ]; then read go < "$1/gate"; fi
  /bin/sh -c 'echo $$ > "$0/pid.$1"; LISTEN_PID=$$; export LISTEN_PID; exec "$2" --config "$3"' "$1" "$i" "$2" "$3"
  echo "$i $?" >> "$1/exits"
  i=$((i + 1))
done
"""


def test_restart_behind_the_held_socket_loses_no_record(
    kpld_bin, kinesalite_endpoint, kinesis, make_stream, kpld_client_module, sock_dir, tmp_path
):
    activate = require_tool("systemd-socket-activate")
    stream = make_stream(kinesis, 2)
    path = sock_dir / "kpld.sock"
    os.mkfifo(sock_dir / "gate")
    # Buffered records wait up to 10 minutes unless flushed or drained: batch B below can
    # only reach the stream through the SIGTERM drain.
    cfg = write_config(
        tmp_path / "k.toml",
        daemon_settings(
            str(sock_dir / "unused.sock"),
            kinesalite_endpoint,
            record_max_buffered_time_ms=600000,
            record_ttl_ms=1200000,
        ),
    )
    log = tmp_path / "holder.log"
    with open(log, "wb") as f:
        holder = subprocess.Popen(
            [activate, "-l", str(path), *activator_env_flags(), "/bin/sh", "-c", HOLDER, "sh",
             str(sock_dir), kpld_bin, str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=f,
        )
    exits = sock_dir / "exits"
    raw: Optional[socket.socket] = None
    pool = ThreadPoolExecutor(max_workers=1)
    producers = []
    try:
        wait_until(lambda: is_socket(path), "the activator's socket", holder, log)

        # Batch A through kpld #1 (the first connection starts it).
        p1 = kpld_client_module.Producer(socket_path=str(path), connect_timeout=WAIT_S)
        producers.append(p1)
        batch_a = [Put(f"A-{i}".encode(), f"k{i}") for i in range(100)]
        put_all(p1, stream, batch_a)
        assert all(p.error is None for p in batch_a), describe_failures(batch_a)

        # Batch B: accepted and buffered by kpld #1, not flushed.
        batch_b = [Put(f"B-{i}".encode(), f"k{i}") for i in range(100)]
        futures_b = [submit(p1, stream, p) for p in batch_b]
        p1.daemon_stats()  # answered after the puts before it: kpld #1 has read batch B
        assert not any(f.done() for f in futures_b), "batch B was answered before the restart"

        # Stop kpld #1: its drain delivers batch B.
        pid1 = int((sock_dir / "pid.1").read_text())
        os.kill(pid1, signal.SIGTERM)
        wait_until(lambda: exits.exists() and exits.read_text().strip(), "kpld #1 to exit", holder, log)
        assert exits.read_text().split() == ["1", "0"], log.read_text()[-5000:]
        collect(batch_b, futures_b, timeout=WAIT_S)
        assert all(p.error is None for p in batch_b), describe_failures(batch_b)
        assert is_socket(path), "kpld #1 removed the held socket's file"

        # No kpld runs now, yet connecting works: the kernel queues the connection in the
        # held socket's backlog. A hand-written Hello (ClientMessage.hello{protocol_version=1})
        # goes into the socket buffer while nobody reads it.
        assert not (sock_dir / "pid.2").exists()
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(WAIT_S)
        raw.connect(str(path))
        hello = bytes([0x0A, 0x02, 0x08, 0x01])
        raw.sendall(len(hello).to_bytes(4, "big") + hello)
        # A client that starts putting meanwhile (its connect may land before or after kpld
        # #2 starts: either way nothing may be refused or lost).
        p2 = kpld_client_module.Producer(socket_path=str(path), connect_timeout=WAIT_S)
        producers.append(p2)
        batch_c = [Put(f"C-{i}".encode(), f"k{i}") for i in range(100)]
        done_c = pool.submit(put_all, p2, stream, batch_c)

        # Start kpld #2.
        with open(sock_dir / "gate", "w") as gate:
            gate.write("go\n")

        # The connection queued while no daemon ran gets kpld #2's HelloReply.
        header = _recv_exact(raw, 4)
        body = _recv_exact(raw, int.from_bytes(header, "big"))
        from kpld import _codec

        kind, info = _codec.decode_server_message(body, 0, len(body))
        assert kind == _codec.HELLO, (kind, info)
        raw.close()
        raw = None

        done_c.result(timeout=WAIT_S)
        assert all(p.error is None for p in batch_c), describe_failures(batch_c)

        pid2 = int((sock_dir / "pid.2").read_text())
        for p in producers:
            p.close()
        producers.clear()
        os.kill(pid2, signal.SIGTERM)
        assert holder.wait(timeout=WAIT_S) == 0, log.read_text()[-5000:]
        assert exits.read_text().split() == ["1", "0", "2", "0"], log.read_text()[-5000:]
    finally:
        if raw is not None:
            raw.close()
        for p in producers:
            try:
                p.close(timeout=10)
            except Exception:
                pass
        pool.shutdown(wait=False)
        if holder.poll() is None:
            for n in (1, 2):
                pid_file = sock_dir / f"pid.{n}"
                if pid_file.exists():
                    try:
                        os.kill(int(pid_file.read_text()), signal.SIGTERM)
                    except (ProcessLookupError, ValueError):
                        pass
            holder.send_signal(signal.SIGTERM)
            holder.wait(timeout=WAIT_S)

    counts = check_delivery(batch_a + batch_b + batch_c, read_stream(kinesis, stream))
    assert counts["user_records"] == 300, counts


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


# ---------------------------------------------------------------------------------------------
# sd_notify


class NotifyListener:
    """Stands in for the service manager's notification socket."""

    def __init__(self, address: str, bind_to):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.settimeout(WAIT_S)
        self.seen: list[str] = []

    def wait_for(self, prefix: str) -> str:
        """Returns the first datagram line starting with `prefix` (reading further ones)."""
        for msg in self.seen:
            for line in msg.splitlines():
                if line.startswith(prefix):
                    return line
        while True:
            msg = self.sock.recv(4096).decode()
            self.seen.append(msg)
            for line in msg.splitlines():
                if line.startswith(prefix):
                    return line

    def close(self):
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notify_listener(request, tmp_path):
    if request.param == "path":
        d = short_dir("kpld-nt")
        path = str(d / "notify")
        listener = NotifyListener(path, path)
        yield listener
        listener.close()
        remove_tree(d)
    else:
        name = f"kpld-test-notify-{uuid.uuid4().hex}"
        listener = NotifyListener("@" + name, "\0" + name)
        yield listener
        listener.close()


def test_ready_watchdog_and_stopping_are_notified(kpld, monkeypatch, notify_listener):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # no WATCHDOG_PID: meant for any pid
    daemon = kpld()

    ready = notify_listener.wait_for("READY=1")
    status = notify_listener.wait_for("STATUS=accepting connections")
    assert daemon.socket_path in status, status
    assert ready == "READY=1"
    notify_listener.wait_for("WATCHDOG=1")

    assert daemon.terminate() == 0, daemon.log()[-5000:]
    notify_listener.wait_for("STOPPING=1")


def test_ready_waits_for_credentials_and_says_so(kpld, monkeypatch, tmp_path):
    d = short_dir("kpld-nt")
    try:
        path = str(d / "notify")
        listener = NotifyListener(path, path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        daemon = kpld()  # the socket accepts connections even without credentials

        first = listener.sock.recv(4096).decode()
        assert first.startswith("STATUS=waiting for AWS credentials"), first
        assert "READY=1" not in first
        assert daemon.terminate() == 0, daemon.log()[-5000:]
        listener.wait_for("STOPPING=1")
        assert not any("READY=1" in m for m in listener.seen), listener.seen
        listener.close()
    finally:
        remove_tree(d)
