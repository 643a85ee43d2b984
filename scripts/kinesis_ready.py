"""Exit 0 when the Kinesis API at argv[1] answers ListStreams, 1 otherwise (used by lib.sh)."""

import sys

import boto3
from botocore.config import Config


def main() -> int:
    client = boto3.client(
        "kinesis",
        endpoint_url=sys.argv[1],
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )
    try:
        client.list_streams()
    except Exception as exc:  # any failure means "not ready yet"
        print(f"not ready: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
