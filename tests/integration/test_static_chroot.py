"""One static binary, proven in an empty chroot: the kpld built by scripts/static-build.sh
(glibc, `-C target-feature=+crt-static`) runs `--version` and delivers records to the
loopback Kinesis server from a directory holding only itself, a CA bundle
(/etc/ssl/certs/ca-certificates.crt) and /etc/hosts: no dynamic loader, no shared library,
no /proc, no /etc/nsswitch.conf, configured by KPLD_* variables alone (no config file).

Also shown, because docs/operations.md states it:
- names in /etc/hosts resolve, and TLS trusts exactly the CA bundle file (an https endpoint
  named `kinesis.test`, served by a TLS proxy with a test CA, works with that CA in the
  bundle and fails without it);
- DNS works too (glibc's built-in dns module, no NSS plugin): a name served by a tiny DNS
  server on 127.0.0.1:53 resolves inside the chroot.

The binary: $KPLD_STATIC_BIN if set, else this builds it with scripts/static-build.sh
(a release build in target/static: minutes the first time, seconds when up to date).
Needs root for chroot (or unprivileged user namespaces) and for port 53.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import pytest

from conftest import _missing
from kinesis_helpers import Put, check_delivery, describe_failures, put_all, read_stream, record_error_code

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 120  # generous upper bound; never asserted as a duration
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


# ---------------------------------------------------------------------------------------------
# the binary


@pytest.fixture(scope="session")
def static_bin() -> str:
    given = os.environ.get("KPLD_STATIC_BIN")
    if given:
        if not os.access(given, os.X_OK):
            _missing(f"KPLD_STATIC_BIN={given} is not an executable file")
        return given
    proc = subprocess.run(
        [str(REPO / "scripts" / "static-build.sh")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/static-build.sh failed:\n{proc.stderr[-5000:]}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]


def elf_program_info(path: str) -> tuple[bool, list[int]]:
    """(has a PT_INTERP header, DT_NEEDED string offsets) of a 64-bit little-endian ELF."""
    with open(path, "rb") as f:
        head = f.read(64)
        assert head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1, "not an ELF64 LE file"
        phoff = struct.unpack_from("<Q", head, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        interp = False
        needed: list[int] = []
        for i in range(phnum):
            p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
                "<IIQQQQ", table, i * phentsize
            )
            if p_type == 3:  # PT_INTERP
                interp = True
            elif p_type == 2:  # PT_DYNAMIC
                f.seek(p_offset)
                dyn = f.read(p_filesz)
                for j in range(0, len(dyn) - 15, 16):
                    tag, val = struct.unpack_from("<qQ", dyn, j)
                    if tag == 0:  # DT_NULL
                        break
                    if tag == 1:  # DT_NEEDED
                        needed.append(val)
    return interp, needed


# ---------------------------------------------------------------------------------------------
# the chroot


def chroot_prefix(root: Path) -> list[str]:
    chroot = shutil.which("chroot") or shutil.which("chroot", path="/usr/sbin:/sbin")
    if not chroot:
        _missing("chroot (coreutils)")
    if os.geteuid() == 0:
        return [chroot, str(root)]
    unshare = shutil.which("unshare")
    if unshare:
        probe = subprocess.run(
            [unshare, "--map-root-user", chroot, str(root), "/kpld", "--version"],
            capture_output=True,
            timeout=WAIT_S,
        )
        if probe.returncode == 0:
            return [unshare, "--map-root-user", chroot, str(root)]
    _missing("root or unprivileged user namespaces, to chroot")
    return []


@pytest.fixture
def chroot_root(static_bin):
    """A fresh root holding only /kpld, /etc/ssl/certs/ca-certificates.crt and /etc/hosts.
    Short path: the socket inside it must fit in 107 bytes."""
    if not HOST_CA_BUNDLE.is_file():
        _missing(f"{HOST_CA_BUNDLE} (Debian package ca-certificates)")
    root = Path(f"/tmp/kpld-root-{uuid.uuid4().hex[:10]}")
    (root / "etc" / "ssl" / "certs").mkdir(parents=True)
    os.chmod(root, 0o755)
    shutil.copy2(static_bin, root / "kpld")
    shutil.copy2(HOST_CA_BUNDLE, root / "etc" / "ssl" / "certs" / "ca-certificates.crt")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost kinesis.test\n::1 localhost\n")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def list_tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


class ChrootDaemon:
    """kpld running as /kpld inside `root`, socket at /kpld.sock (host: root/kpld.sock)."""

    def __init__(self, root: Path, endpoint: str, log: Path, **settings):
        self.root = root
        self.socket_path = str(root / "kpld.sock")
        self.log_path = log
        # A container's environment: nothing but what kpld needs. No PATH, no HOME.
        env = {
            "KPLD_SOCKET_PATH": "/kpld.sock",
            "KPLD_REGION": os.environ.get("AWS_REGION", "us-east-1"),
            "KPLD_KINESIS_ENDPOINT": endpoint,
            "KPLD_RECORD_MAX_BUFFERED_TIME_MS": "100",
            "KPLD_RECORD_TTL_MS": "60000",
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        for k, v in settings.items():
            env[f"KPLD_{k.upper()}"] = str(v)
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                [*chroot_prefix(root), "/kpld"],
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=f,
                env=env,
            )
        deadline = time.monotonic() + WAIT_S
        while not self._accepts():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"kpld in the chroot did not start; log:\n{self.log()}")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket_path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"kpld in the chroot ignored SIGTERM; log:\n{self.log()}")


def put_through(client_module, daemon: ChrootDaemon, stream: str, n: int, tag: str) -> list[Put]:
    producer = client_module.Producer(socket_path=daemon.socket_path, connect_timeout=WAIT_S)
    try:
        return put_all(producer, stream, [Put(f"{tag}-{i}".encode(), f"k{i}") for i in range(n)])
    finally:
        producer.close()


# ---------------------------------------------------------------------------------------------
# the tests


def test_static_binary_needs_no_loader_and_no_shared_library(static_bin):
    interp, needed = elf_program_info(static_bin)
    assert not interp, f"{static_bin} names a dynamic loader (PT_INTERP)"
    assert not needed, f"{static_bin} needs {len(needed)} shared libraries (DT_NEEDED)"


def test_version_runs_in_an_empty_chroot(chroot_root):
    proc = subprocess.run(
        [*chroot_prefix(chroot_root), "/kpld", "--version"],
        capture_output=True,
        text=True,
        env={},
        timeout=WAIT_S,
    )
    assert proc.returncode == 0, proc
    assert proc.stdout.startswith("kpld "), proc.stdout
    assert list_tree(chroot_root) == [
        "etc/hosts",
        "etc/ssl/certs/ca-certificates.crt",
        "kpld",
    ]


def test_delivers_records_from_an_empty_chroot(
    chroot_root, kinesalite_endpoint, kinesis, make_stream, kpld_client_module, tmp_path
):
    stream = make_stream(kinesis, 2)
    assert "127.0.0.1" in kinesalite_endpoint  # numeric: no name resolution involved
    daemon = ChrootDaemon(chroot_root, kinesalite_endpoint, tmp_path / "kpld.log")
    try:
        puts = put_through(kpld_client_module, daemon, stream, 200, "chroot")
    finally:
        rc = daemon.stop()
    assert rc == 0, daemon.log()
    assert all(p.error is None for p in puts), describe_failures(puts) + "\n" + daemon.log()
    counts = check_delivery(puts, read_stream(kinesis, stream))
    assert counts["user_records"] == 200
    # It left nothing behind but what was there (its socket file is removed at exit).
    assert list_tree(chroot_root) == ["etc/hosts", "etc/ssl/certs/ca-certificates.crt", "kpld"]


# ---- TLS, with a name from /etc/hosts --------------------------------------------------------


def make_test_ca(d: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for kinesis.test, server key), made with openssl."""
    openssl = shutil.which("openssl")
    if not openssl:
        _missing("openssl (Debian package openssl)")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=WAIT_S)

    ca_key, ca, key, csr, crt, ext = (d / n for n in ("ca.key", "ca.crt", "srv.key", "srv.csr", "srv.crt", "ext.cnf"))
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=kpld test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=kinesis.test")
    ext.write_text("subjectAltName=DNS:kinesis.test\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return ca, crt, key


class TlsProxy:
    """TLS on 127.0.0.1:<port> in front of a plain-HTTP upstream (kinesalite)."""

    def __init__(self, cert: Path, key: Path, upstream: tuple[str, int]):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.upstream = upstream
        self.loop = asyncio.new_event_loop()
        self.port: Optional[int] = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(WAIT_S)
        assert self.port, "the TLS proxy did not start"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except Exception:
                pass
            finally:
                w.close()

        async def handle(r, w):
            try:
                ur, uw = await asyncio.open_connection(*self.upstream)
            except OSError:
                w.close()
                return
            await asyncio.gather(pipe(r, uw), pipe(ur, w))

        async def start():
            self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self.ctx)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)


def _host_port(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def tls_proxy(kinesalite_endpoint, tmp_path):
    ca, crt, key = make_test_ca(tmp_path)
    proxy = TlsProxy(crt, key, _host_port(kinesalite_endpoint))
    proxy.ca = ca
    yield proxy
    proxy.close()


def test_https_name_from_etc_hosts_trusted_through_the_ca_bundle(
    chroot_root, tls_proxy, kinesis, make_stream, kpld_client_module, tmp_path
):
    stream = make_stream(kinesis, 1)
    # The bundle holds exactly the test CA: the system roots are not needed, nothing is
    # compiled in, and kinesis.test exists only in the chroot's /etc/hosts.
    shutil.copy2(tls_proxy.ca, chroot_root / "etc" / "ssl" / "certs" / "ca-certificates.crt")
    endpoint = f"https://kinesis.test:{tls_proxy.port}"
    daemon = ChrootDaemon(chroot_root, endpoint, tmp_path / "kpld.log")
    try:
        puts = put_through(kpld_client_module, daemon, stream, 50, "tls")
    finally:
        rc = daemon.stop()
    assert rc == 0, daemon.log()
    assert all(p.error is None for p in puts), describe_failures(puts) + "\n" + daemon.log()
    check_delivery(puts, read_stream(kinesis, stream))


def test_https_fails_when_the_ca_bundle_lacks_the_issuer(
    chroot_root, tls_proxy, kinesis, make_stream, kpld_client_module, tmp_path
):
    stream = make_stream(kinesis, 1)
    (chroot_root / "etc" / "ssl" / "certs" / "ca-certificates.crt").unlink()
    endpoint = f"https://kinesis.test:{tls_proxy.port}"
    daemon = ChrootDaemon(chroot_root, endpoint, tmp_path / "kpld.log", record_ttl_ms=2000)
    try:
        puts = put_through(kpld_client_module, daemon, stream, 3, "untrusted")
    finally:
        rc = daemon.stop()
    assert rc == 0, daemon.log()
    assert all(p.error is not None for p in puts), "records were delivered without a trusted CA"
    assert {record_error_code(p.error) for p in puts} == {"Expired"}, describe_failures(puts)
    log = daemon.log()
    assert "no native root CA certificates found" in log, log
    assert "UnknownIssuer" in log, log
    assert read_stream(kinesis, stream).user_records == []


# ---- DNS ---------------------------------------------------------------------------------------


class TinyDns:
    """Answers A queries for names under `.dns.test` with 127.0.0.1 (other types: no data;
    other names: NXDOMAIN) on udp 127.0.0.1:53, and records the names asked."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(("127.0.0.1", 53))
        except OSError as exc:
            self.sock.close()
            _missing(f"udp 127.0.0.1:53 for a test DNS server ({exc})")
        self.asked: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                q, peer = self.sock.recvfrom(512)
            except OSError:
                return
            try:
                tid = struct.unpack(">H", q[:2])[0]
                i, labels = 12, []
                while q[i]:
                    labels.append(q[i + 1 : i + 1 + q[i]].decode())
                    i += 1 + q[i]
                qtype = struct.unpack(">H", q[i + 1 : i + 3])[0]
                question = q[12 : i + 5]
                name = ".".join(labels)
                self.asked.append(name)
                if name.endswith(".dns.test") and qtype == 1:
                    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
                    resp = struct.pack(">HHHHHH", tid, 0x8180, 1, 1, 0, 0) + question + answer
                elif name.endswith(".dns.test"):
                    resp = struct.pack(">HHHHHH", tid, 0x8180, 1, 0, 0, 0) + question
                else:
                    resp = struct.pack(">HHHHHH", tid, 0x8183, 1, 0, 0, 0) + question
                self.sock.sendto(resp, peer)
            except Exception:
                continue

    def close(self) -> None:
        self.sock.close()


def test_dns_name_resolves_in_an_empty_chroot(
    chroot_root, kinesalite_endpoint, kinesis, make_stream, kpld_client_module, tmp_path
):
    if os.geteuid() != 0:
        _missing("root, to serve DNS on port 53")
    stream = make_stream(kinesis, 1)
    dns = TinyDns()
    try:
        # What every container runtime provides; no nsswitch.conf, no libnss_*.so.
        (chroot_root / "etc" / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        _, port = _host_port(kinesalite_endpoint)
        daemon = ChrootDaemon(chroot_root, f"http://kinesis.dns.test:{port}", tmp_path / "kpld.log")
        try:
            puts = put_through(kpld_client_module, daemon, stream, 20, "dns")
        finally:
            rc = daemon.stop()
    finally:
        dns.close()
    assert rc == 0, daemon.log()
    assert all(p.error is None for p in puts), describe_failures(puts) + "\n" + daemon.log()
    assert "kinesis.dns.test" in dns.asked, dns.asked
    check_delivery(puts, read_stream(kinesis, stream))
