"""`kpld --config` refuses bad configs with a message naming the key; `--check` prints the
effective config (files and KPLD_* environment merged) without secrets."""

from __future__ import annotations

import os
import subprocess

import pytest

from kinesis_helpers import write_config

SECRET = "kpld-test-secret-do-not-print-9f3a7c"


def run_kpld(kpld_bin, *args, env_extra=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPLD_")}
    env["AWS_SECRET_ACCESS_KEY"] = SECRET
    env["AWS_ACCESS_KEY_ID"] = "AKIDKPLDTEST"
    env.update(env_extra or {})
    return subprocess.run(
        [kpld_bin, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.fixture
def base_settings(tmp_path):
    return {
        "socket_path": str(tmp_path / "kpld.sock"),
        "region": "us-east-1",
        "kinesis_endpoint": "http://127.0.0.1:9",
        "record_max_buffered_time_ms": 100,
    }


@pytest.mark.parametrize(
    "key, value",
    [
        ("no_such_setting", 1),  # unknown key
        ("record_max_buffered_time_ms", "soon"),  # wrong type
        ("record_ttl_ms", -5),  # out of range
        ("aggregation_enabled", "maybe"),  # wrong type
    ],
)
def test_bad_config_exits_nonzero_naming_the_key(kpld_bin, tmp_path, base_settings, key, value):
    settings = dict(base_settings)
    settings[key] = value
    config = write_config(tmp_path / "bad.toml", settings)

    for extra in ([], ["--check"]):
        proc = run_kpld(kpld_bin, "--config", str(config), *extra)
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"kpld accepted {key} = {value!r}:\n{output}"
        assert key in output, f"the error does not name {key}:\n{output}"
    assert not os.path.exists(base_settings["socket_path"]), "a socket was created"


def test_bad_env_override_exits_nonzero_naming_the_key(kpld_bin, tmp_path, base_settings):
    config = write_config(tmp_path / "ok.toml", base_settings)
    proc = run_kpld(
        kpld_bin, "--config", str(config), "--check", env_extra={"KPLD_RECORD_TTL_MS": "soon"}
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "record_ttl_ms" in output.lower(), output


def test_missing_config_file_exits_nonzero(kpld_bin, tmp_path):
    missing = tmp_path / "does-not-exist.toml"
    proc = run_kpld(kpld_bin, "--config", str(missing))
    assert proc.returncode != 0
    assert str(missing) in proc.stdout + proc.stderr


def test_check_prints_effective_config_without_secrets(kpld_bin, tmp_path, base_settings):
    config = write_config(tmp_path / "ok.toml", base_settings)

    proc = run_kpld(
        kpld_bin, "--config", str(config), "--check", env_extra={"KPLD_RECORD_TTL_MS": "12345"}
    )

    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert base_settings["socket_path"] in output  # from the file
    assert "http://127.0.0.1:9" in output
    assert "12345" in output  # from the environment
    assert "aggregation_enabled" in output  # defaults are shown too
    assert SECRET not in output
    assert not os.path.exists(base_settings["socket_path"]), "--check must not bind the socket"
