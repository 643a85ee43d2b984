"""Every code block of README.md and of both clients' READMEs, run as written (issue 18).

A README's blocks run in document order, each README in one working directory, so that a
block can use what an earlier one made (a config file, a daemon, an installed package):
README.md and clients/python/README.md in the repository root, as they say; the Node client's
README in a new, empty application directory, as it says. Every block sees `target/debug`
(the `kpld` under test) and a virtualenv of its own first on PATH, and `KPLD_REPO`, the
repository. The client READMEs' examples talk to a `kpld local` this test starts, through
`$KPLD_SOCKET` (the clients' default socket when it is set).

How a block runs, by its language:
- `sh`: `bash -euo pipefail`; it must exit 0. A command it leaves running (`cmd &`) is
  stopped with its process group once the README is done.
- `python`: that virtualenv's python, the block as a script (the venv sees the test
  requirements and the client; a `pip install` in a block installs into it, not into the
  test's own venv).
- `js`: node, as an ES module when the block uses `import` or top-level `await`, else as
  CommonJS; it runs in the README's working directory, and README.md's examples find the
  packages they require among the Node client's development dependencies (NODE_PATH).
- `toml`: written to the file its first line names (`# kpld.toml`), else to a temporary
  file, and checked with `kpld --config FILE --check`.
- no language: text (diagrams, trees), not code.
A comment on the line before a block changes how it runs:
- `<!-- readme-test: daemon SOCKET -->`: the block starts a daemon: the next block runs once
  SOCKET accepts connections. A daemon in the foreground (the block's last command) is left
  running, and at the end of the README it gets SIGTERM and must exit 0; one started with
  `&` is stopped with the block's process group.
- `<!-- readme-test: skip REASON -->`: not run; the reason is required and is printed.
Any other language, or a directive this test does not know, fails the test.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import _socket_accepts as socket_accepts

REPO = Path(__file__).resolve().parents[2]
READMES = ["README.md", "clients/python/README.md", "clients/node/README.md"]
BLOCK_TIMEOUT_S = 900  # `cargo build --release` from nothing, on two shared cores
DAEMON_READY_S = 60
LANGS = {"sh", "python", "js", "toml"}

FENCE = re.compile(r"^```(\S*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*readme-test:\s*(\w+)\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    readme: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    directive: tuple[str, str] | None

    def where(self) -> str:
        return f"{self.readme}:{self.line} ({self.lang or 'text'})"


def blocks_of(readme: str) -> list[Block]:
    lines = (REPO / readme).read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        assert j < len(lines), f"{readme}:{start + 1}: code block never closed"
        d = DIRECTIVE.match(lines[start - 1]) if start > 0 else None
        out.append(
            Block(
                readme,
                start + 1,
                lang,
                "\n".join(lines[start + 1 : j]) + "\n",
                (d.group(1), d.group(2)) if d else None,
            )
        )
        i = j + 1
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Session:
    """What one README's blocks share: a working directory, an environment, and what they
    left running."""

    cwd: Path
    env: dict[str, str]
    scratch: Path
    background: list[subprocess.Popen] = field(default_factory=list)
    daemons: list[tuple[Block, subprocess.Popen]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    def popen(self, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            return subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def run_block(s: Session, b: Block, n: int) -> None:
    log = s.scratch / f"block-{n}.log"
    if b.lang == "toml":
        first = b.code.splitlines()[0] if b.code.strip() else ""
        named = re.fullmatch(r"#\s*([\w.-]+\.toml)\s*", first)
        path = s.cwd / named.group(1) if named else s.scratch / f"block-{n}.toml"
        assert not (named and path.exists() and path not in s.written), (
            f"{b.where()}: would overwrite {path}, which the test did not write"
        )
        path.write_text(b.code)
        s.written.append(path)
        argv = ["kpld", "--config", str(path), "--check"]
    elif b.lang == "sh":
        argv = ["bash", "-euo", "pipefail", "-c", b.code]
    elif b.lang == "python":
        argv = ["python", "-c", b.code]
    elif b.lang == "js":
        esm = re.search(r"^\s*import\s|^await\s|^const .*= await ", b.code, re.M) is not None
        script = s.cwd / f".readme-block-{n}.{'mjs' if esm else 'cjs'}"
        script.write_text(b.code)
        s.written.append(script)
        argv = ["node", str(script)]
    else:
        pytest.fail(f"{b.where()}: no way to run a block in {b.lang!r}; give it a language "
                    f"this test runs ({sorted(LANGS)}) or a skip directive with a reason")
    proc = s.popen(argv, log)
    if b.directive and b.directive[0] == "daemon":
        sock = b.directive[1]
        deadline = time.monotonic() + DAEMON_READY_S
        while not socket_accepts(sock):
            # A block that starts its daemon with `&` exits 0 at once; one that runs it in
            # the foreground must still be running.
            rc = proc.poll()
            if rc not in (None, 0):
                pytest.fail(f"{b.where()} exited with {rc} before {sock} "
                            f"accepted connections:\n{log.read_text()[-6000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{b.where()}: {sock} did not accept within {DAEMON_READY_S} s:\n"
                            f"{log.read_text()[-6000:]}")
            time.sleep(0.1)
        if proc.poll() is None:
            s.daemons.append((b, proc))
        else:
            s.background.append(proc)
        return
    s.background.append(proc)
    try:
        rc = proc.wait(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{b.where()} did not finish within {BLOCK_TIMEOUT_S} s:\n"
                    f"{log.read_text()[-6000:]}")
    out = log.read_text(errors="replace")
    print(f"--- {b.where()} exited {rc}\n{out[-3000:]}")
    assert rc == 0, f"{b.where()} exited with {rc}:\n{b.code}\n--- output:\n{out[-6000:]}"


def children_of(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces and parentheses
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def stop(s: Session) -> list[str]:
    problems = []
    for b, proc in s.daemons:
        # SIGTERM to the daemon itself (bash's child), so that bash reports its exit code.
        targets = children_of(proc.pid) or [proc.pid]
        for pid in targets:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            problems.append(f"{b.where()} did not exit within 60 s of SIGTERM")
            continue
        if rc != 0:
            problems.append(f"{b.where()} exited with {rc} after SIGTERM")
    for proc in s.background:
        # What a block left running (`cmd &`) is in the block's process group.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    for proc in s.background:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in s.written:
        p.unlink(missing_ok=True)
    return problems


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A virtualenv of the blocks' own, which also sees the test venv's packages (boto3,
    aws-kinesis-agg, the client), so that `pip install` in a block leaves the test venv alone."""
    root = tmp_path_factory.mktemp("readme-venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    site = subprocess.run(
        [str(root / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    Path(site, "_kpld_test_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


@pytest.fixture
def session(kpld_bin, venv, tmp_path):
    def make(cwd: Path, **extra: str) -> Session:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join(
            [str(Path(kpld_bin).parent), str(venv / "bin"), env.get("PATH", "")]
        )
        env["VIRTUAL_ENV"] = str(venv)
        env["KPLD_REPO"] = str(REPO)
        env["NODE_PATH"] = str(REPO / "clients" / "node" / "node_modules")
        env.pop("PYTHONPATH", None)
        env.update(extra)
        return Session(cwd, env, tmp_path)

    return make


@pytest.fixture
def kpld_local(kpld_bin, tmp_path):
    """`kpld local` for the client READMEs' examples, on its socket and a free port."""
    sock = f"/tmp/kpld-readme-{os.getpid()}.sock"
    port = free_port()
    log = tmp_path / "kpld-local.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [kpld_bin, "local", "--socket", sock, "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + DAEMON_READY_S
    while not socket_accepts(sock):
        assert proc.poll() is None, f"kpld local exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"kpld local not ready:\n{log.read_text()}"
        time.sleep(0.05)
    yield sock
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    assert rc == 0, f"kpld local exited with {rc}:\n{log.read_text()[-6000:]}"


def run_readme(s: Session, readme: str) -> None:
    blocks = blocks_of(readme)
    assert blocks, f"{readme} has no code blocks"
    ran = skipped = 0
    try:
        for n, b in enumerate(blocks):
            if not b.lang:
                continue
            if b.directive:
                kind, arg = b.directive
                assert kind in ("skip", "daemon"), f"{b.where()}: unknown directive {kind!r}"
                if kind == "skip":
                    assert arg, f"{b.where()}: a skip needs its reason"
                    print(f"--- {b.where()} not run: {arg}")
                    skipped += 1
                    continue
                assert arg.startswith("/"), f"{b.where()}: daemon needs the socket it serves"
            if b.lang not in LANGS:
                pytest.fail(f"{b.where()}: no way to run {b.lang!r} and no skip directive")
            run_block(s, b, n)
            ran += 1
    finally:
        problems = stop(s)
    assert not problems, "\n".join(problems)
    print(f"{readme}: {ran} blocks run, {skipped} not run (reasons above)")


def test_readme_blocks_run_as_written(session):
    for path in ("/tmp/kpld/kpld.sock", "/tmp/kpld-local.sock"):
        assert not socket_accepts(path), f"something already serves {path}, which README.md uses"
    run_readme(session(REPO), "README.md")


def test_python_client_readme_blocks_run_as_written(session, kpld_local):
    run_readme(session(REPO, KPLD_SOCKET=kpld_local), "clients/python/README.md")


def test_node_client_readme_blocks_run_as_written(session, kpld_local, tmp_path):
    app = tmp_path / "my-app"
    app.mkdir()
    run_readme(session(app, KPLD_SOCKET=kpld_local), "clients/node/README.md")


def test_every_readme_block_is_accounted_for():
    """A block in a language this test cannot run, or a directive it does not know, is
    caught here without running anything."""
    for readme in READMES:
        for b in blocks_of(readme):
            if not b.lang:
                continue
            if b.directive:
                kind, arg = b.directive
                assert kind in ("skip", "daemon"), f"{b.where()}: unknown directive {kind!r}"
                assert arg, f"{b.where()}: directive {kind} needs its argument"
                if kind == "skip":
                    continue
            assert b.lang in LANGS, f"{b.where()}: no way to run {b.lang!r}"

