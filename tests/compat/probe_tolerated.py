"""Probe: which objects a project with files the original accepts shows a script."""

import json
import os

try:
    from thot.thot import LocalProject as Project
except ImportError:
    from thot.thot import ThotProject as Project

db = Project("proj")
print(json.dumps({
    "containers": sorted(os.path.relpath(c["_id"]) for c in db.find_containers()),
    "assets": sorted(os.path.relpath(a["_id"]) for a in db.find_assets()),
    "tags_x": sorted(os.path.relpath(c["_id"]) for c in db.find_containers({"tags": "x"})),
    "name_5": sorted(os.path.relpath(c["_id"]) for c in db.find_containers({"name": 5})),
}, sort_keys=True))
