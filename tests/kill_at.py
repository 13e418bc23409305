"""Run ``python -m handler ...`` and SIGKILL it at its Nth S3 call of one kind: a crash at a chosen point.

python -m tests.kill_at PutObject 300 bulk --run-id first
"""

from __future__ import annotations

import os
import signal
import sys

import boto3


def main() -> int:
    operation, at = sys.argv[1], int(sys.argv[2])
    seen = 0

    def count(**_: object) -> None:
        nonlocal seen
        seen += 1
        if seen == at:
            os.kill(os.getpid(), signal.SIGKILL)

    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register(f"before-call.s3.{operation}", count)  # every client made after this
    from handler.__main__ import main as cli

    return cli(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
