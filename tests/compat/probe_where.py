"""Run by a runner: where a script starts, and where the script API leaves it.

Appends one JSON line to $PROBE_OUT: paths relative to $PROBE_WORK (where the runner was
started)."""

import json
import os

work = os.environ["PROBE_WORK"]
first = os.path.relpath(os.getcwd(), work)
sees_data = os.path.exists("data.txt")  # a relative open before any project object exists
try:
    from thot.thot import LocalProject as Project
except ImportError:
    from thot.thot import ThotProject as Project
db = Project()
with open(os.environ["PROBE_OUT"], "a") as fh:
    fh.write(json.dumps({
        "script": os.path.basename(__file__),
        "container": os.path.relpath(db.root, work),
        "first": first,
        "after": os.path.relpath(os.getcwd(), work),
        "sees_data_first": sees_data,
        "dev_mode": Project.dev_mode(),
    }) + "\n")
