"""``python -m thot.runner [--root PATH]``: the original entry point of the one-shot runner."""

from __future__ import annotations

import sys

from thotd.cli.thot import main


def run() -> int:
    return main(["run", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(run())
