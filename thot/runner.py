"""``python -m thot.runner [-r ROOT] [--scripts JSON] [--ignore-errors] [--verbose] [-t [N]]``
and ``thot.runner.run(root, ...)``: the original runner's entry points, over ``thot run``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any


def run(
    root: str | os.PathLike[str] = ".",
    scripts: Sequence[str] | None = None,
    tasks: int | None = None,
    ignore_errors: bool = False,
    verbose: bool = False,
    **_ignored: Any,
) -> int:
    """Run the project at ``root`` bottom-up, as the original ``run(root, **kwargs)``; the
    keyword arguments it took are accepted (those of older runners too) and the exit status
    of ``thot run`` is returned."""
    from thotd.cli.thot import main

    argv = ["run", "--root", os.fspath(root)]
    if scripts is not None:
        argv += ["--scripts", json.dumps(list(scripts))]
    if tasks:
        argv += ["--jobs", str(tasks)]
    if ignore_errors:
        argv.append("--ignore-errors")
    if verbose:
        argv.append("--verbose")
    return main(argv)


def _main(argv: Sequence[str]) -> int:
    from thotd.cli.thot import main

    return main(["run", *argv])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
