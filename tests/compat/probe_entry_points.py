"""Probe of the original's other entry points a script or notebook imports: ``LocalDB``,
``thot.filter``, ``ThotUtilities``, ``thot.runner.run``. Prints one JSON object."""

import json
import os

out = {}
with open(os.path.join("proj", "b", "_scripts.json"), "w") as fh:
    json.dump([{"script": "x.py", "autorun": True}], fh)

from thot.db.local import LocalDB  # noqa: E402

db = LocalDB(os.path.abspath("proj"))
out["localdb_assets"] = sorted(str(a["name"]) for a in db.assets.find({"type": "raw"}))
out["localdb_container"] = os.path.relpath(db.containers.find_one({"name": "b"})["_id"])
out["localdb_none"] = db.assets.find_one({"type": "nothing"})

try:
    import thot

    objects = [{"n": "a", "k": 1}, {"n": "b", "k": 2}, {"n": "c"}]
    out["filter"] = [o["n"] for o in thot.filter({"k": 1}, objects)]
except AttributeError:
    out["filter"] = "absent"

try:
    from thot.utilities import ThotUtilities

    ThotUtilities(os.path.abspath("proj")).add_scripts({"script": "new.py"}, {"name": "b"})
    with open(os.path.join("proj", "b", "_scripts.json")) as fh:
        out["utilities_add_scripts"] = json.load(fh)
except ImportError:
    out["utilities_add_scripts"] = "absent"

try:
    from thot.runner import run

    out["runner_run"] = callable(run)
except ImportError:
    out["runner_run"] = "absent"
print(json.dumps(out, sort_keys=True))
