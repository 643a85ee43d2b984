"""Where the shared protocol files live, relative to this test directory."""

from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = CLIENT_DIR.parent.parent
GOLDEN_DIR = REPO_ROOT / "tests" / "golden"
PROTO_FILE = REPO_ROOT / "proto" / "kpld.proto"
