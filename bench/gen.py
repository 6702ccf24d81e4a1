"""Generate Thot project trees for benchmarks and tests (standard library only).

Two shapes:

* :func:`make_flat` — a big, realistic tree (groups → batches → samples) with a given total of
  containers and assets, used to measure indexing.  Object files carry the fields real projects
  carry (``_id: null``, ``created``, ``parent``, ``roles``...), metadata at every level (so
  inheritance matters), tags, a few ``_notes/`` folders, a few ``_scripts.json`` and a few
  plain folders that are not objects.
* :func:`make_gs` — the "G×S" analysis project used by the incremental benches: ``G`` groups
  of ``S`` samples, each sample holding one raw asset, with a script per level (sample → group
  → summary).  :func:`add_sample` drops one more sample file by file, as a file manager would.

Everything is deterministic for a given set of arguments (names, contents, metadata), so two
generated trees can be compared and two analysis runs compared byte for byte.

CLI::

    python bench/gen.py flat DIR --containers N --assets M [--depth 3] [--seed 0]
    python bench/gen.py gs DIR --groups G --samples S
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import zlib
from pathlib import Path

__all__ = ["make_flat", "make_gs", "add_sample", "sample_values", "GS_SCRIPTS"]

_LEVEL_TYPES = ["group", "batch", "sample", "subsample", "replicate", "run", "cell", "spot"]
_TAG_POOL = [
    "calibrated",
    "control",
    "pilot",
    "repeat",
    "dark",
    "light",
    "hot",
    "cold",
    "blind",
    "qc-pass",
    "qc-fail",
    "archived",
]
_OPERATORS = ["ada", "brian", "chen", "dana", "emre", "fatou"]
_INSTRUMENTS = ["uv-vis", "pl-spectrometer", "xrd", "afm", "iv-station"]


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _created(rng: random.Random) -> str:
    # A fixed, plausible timestamp: deterministic for a given seed.
    day = rng.randrange(1, 28)
    month = rng.randrange(1, 13)
    sec = rng.randrange(0, 86400)
    return f"2019-{month:02d}-{day:02d}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"


def _level_sizes(total: int, depth: int) -> list[int]:
    """Split ``total`` non-root containers into ``depth`` levels growing geometrically."""
    if total <= 0:
        return []
    depth = max(1, min(depth, total))
    # Find branching b with b + b^2 + ... + b^depth ≈ total (bisection on a float).
    lo, hi = 1.0, float(total)
    for _ in range(100):
        mid = (lo + hi) / 2
        if sum(mid**k for k in range(1, depth + 1)) < total:
            lo = mid
        else:
            hi = mid
    sizes = [max(1, round(hi**k)) for k in range(1, depth + 1)]
    # Keep every level no smaller than the one above, fix the sum on the last level.
    for k in range(1, depth):
        sizes[k] = max(sizes[k], sizes[k - 1])
    excess = sum(sizes) - total
    k = depth - 1
    while excess != 0:
        if excess < 0:
            sizes[k] -= excess
            excess = 0
        else:
            floor = sizes[k - 1] if k > 0 else 1
            cut = min(excess, sizes[k] - floor)
            sizes[k] -= cut
            excess -= cut
            k -= 1
            if k < 0:  # cannot keep monotone: drop deepest levels
                sizes = [s for s in sizes if s > 0]
                break
    return [s for s in sizes if s > 0]


def _container_doc(rng: random.Random, name: str, ctype: str, metadata: dict) -> dict:
    doc: dict = {
        "_id": None,
        "name": name,
        "type": ctype,
        "description": f"{ctype} {name}" if rng.random() < 0.5 else None,
        "tags": rng.sample(_TAG_POOL, rng.randrange(0, 4)),
        "metadata": metadata,
        "created": _created(rng),
        "parent": None,
    }
    if rng.random() < 0.3:
        doc["roles"] = []
    return doc


def _add_notes(folder: Path, title: str) -> None:
    notes = folder / "_notes"
    notes.mkdir(exist_ok=True)
    (notes / f"{title}.txt").write_text(f"Note about {title}.\n", encoding="utf-8")


def _flat_container(rng: random.Random, folder: Path, ctype: str, i: int) -> None:
    """One inner container of :func:`make_flat` (the draws in a fixed order: the tree is a
    function of the seed)."""
    folder.mkdir()
    md: dict = {ctype: i}
    r = rng.random()
    if r < 0.2:
        md["operator"] = rng.choice(_OPERATORS)  # overrides the project's
    elif r < 0.3:
        md["temperature"] = round(20 + rng.random() * 60, 1)
    if ctype == "batch":
        md["date"] = _created(rng)[:10]
    _write_json(folder / "_container.json", _container_doc(rng, folder.name, ctype, md))
    if ctype == "group":
        _write_json(
            folder / "_scripts.json",
            [{"script": "root:/../analysis/group.py", "priority": 0, "autorun": True}],
        )
    if rng.random() < 0.02:
        _add_notes(folder, "observations")
    if rng.random() < 0.01:
        scratch = folder / "scratch"
        scratch.mkdir()
        (scratch / "todo.txt").write_text("not an object\n", encoding="utf-8")


def make_flat(root: Path, containers: int, assets: int, *, depth: int = 3, seed: int = 0) -> Path:
    """Write a Thot tree of ``containers`` containers (the root included) and ``assets`` assets.

    Layout (``depth=3``)::

        root/_container.json                      type "project"
        root/group-00/_container.json             type "group"
        root/group-00/batch-000/_container.json   type "batch"
        root/group-00/batch-000/sample-0000/      type "sample"
            _container.json
            asset-000000/_asset.json + data.csv   type "raw" (most assets live on samples)

    Non-leaf containers get about 1 asset in 10.  About 1 object in 50 has a ``_notes/`` folder,
    each group has a ``_scripts.json``, and a few containers hold a ``scratch/`` folder that is
    not an object (and must be ignored).  Returns ``root``.
    """
    root = Path(root)
    rng = random.Random(seed)
    if containers < 1:
        raise ValueError("containers must be >= 1 (the root)")
    root.mkdir(parents=True, exist_ok=True)

    _write_json(
        root / "_container.json",
        _container_doc(
            rng,
            "project",
            "project",
            {
                "project": "bench",
                "operator": rng.choice(_OPERATORS),
                "temperature": 25.0,
                "lab": {"building": "B2", "room": 104},
            },
        ),
    )
    _add_notes(root, "readme")

    sizes = _level_sizes(containers - 1, depth)
    levels: list[list[Path]] = [[root]]
    for k, size in enumerate(sizes):
        parents = levels[-1]
        ctype = _LEVEL_TYPES[k] if k < len(_LEVEL_TYPES) else f"level{k}"
        width = len(str(max(size - 1, 1)))
        level: list[Path] = []
        for i in range(size):
            parent = parents[i % len(parents)]
            folder = parent / f"{ctype}-{i:0{width}d}"
            _flat_container(rng, folder, ctype, i)
            level.append(folder)
        levels.append(level)

    leaves = levels[-1]
    inner = [c for lvl in levels[:-1] for c in lvl] if len(levels) > 1 else []
    counters: dict[Path, int] = {}
    for n in range(assets):
        on_inner = inner and n % 10 == 9
        owner = inner[(n // 10) % len(inner)] if on_inner else leaves[n % len(leaves)]
        counters[owner] = counters.get(owner, 0) + 1
        folder = owner / f"asset-{n:06d}"
        folder.mkdir()
        doc = {
            "_id": None,
            "name": f"{owner.name if owner != root else 'project'} measurement {counters[owner]}",
            "type": "raw" if rng.random() < 0.8 else "image",
            "description": None,
            "tags": rng.sample(_TAG_POOL, rng.randrange(0, 3)),
            "metadata": {"instrument": rng.choice(_INSTRUMENTS), "run": counters[owner]},
            "file": "data.csv",
            "creator": rng.choice(_OPERATORS),
            "creator_type": "user",
            "created": _created(rng),
            "parent": None,
        }
        _write_json(folder / "_asset.json", doc)
        values = [rng.randrange(0, 1000) for _ in range(4)]
        (folder / "data.csv").write_text(
            "value\n" + "".join(f"{v}\n" for v in values), encoding="utf-8"
        )
        if rng.random() < 0.02:
            _add_notes(folder, "calibration")
    return root


# --- G×S analysis project ----------------------------------------------------------------

_SAMPLE_PY = '''\
"""Sample level: mean of the raw numbers -> asset 'stats' (stats.txt)."""
import os
{import_line}

db = {ctor}()
raw = db.find_asset({{'type': 'raw'}})
with open(raw.file, encoding='utf-8') as f:
    rows = f.read().split()
nums = [float(x) for x in rows[1:] if x]
mean = sum(nums) / len(nums)
name = os.path.basename(db.root)
path = db.add_asset({{'type': 'stats', 'name': name + ' stats', 'file': 'stats.txt'}}, 'stats')
with open(path, 'w', encoding='utf-8') as f:
    f.write('%s %d %r\\n' % (name, len(nums), mean))
'''

_GROUP_PY = '''\
"""Group level: sum of the samples' means -> asset 'group_stats' (group_stats.txt)."""
import os
{import_line}

db = {ctor}()
stats = sorted(db.find_assets({{'type': 'stats'}}), key=lambda a: a.file)
lines = []
total = 0.0
for asset in stats:
    with open(asset.file, encoding='utf-8') as f:
        sample, n, mean = f.read().split()
    total += float(mean)
    lines.append('%s %s' % (sample, mean))
name = os.path.basename(db.root)
path = db.add_asset(
    {{'type': 'group_stats', 'name': name + ' stats', 'file': 'group_stats.txt'}}, 'group_stats'
)
with open(path, 'w', encoding='utf-8') as f:
    f.write('%s samples=%d sum=%r\\n' % (name, len(stats), total))
    f.write(''.join(line + '\\n' for line in lines))
'''

_SUMMARY_PY = '''\
"""Project level: one line per group -> asset 'summary' (summary.txt)."""
{import_line}

db = {ctor}()
groups = sorted(db.find_assets({{'type': 'group_stats'}}), key=lambda a: a.file)
out = []
grand = 0.0
samples = 0
for asset in groups:
    with open(asset.file, encoding='utf-8') as f:
        head = f.readline().split()
    out.append(' '.join(head))
    samples += int(head[1].split('=')[1])
    grand += float(head[2].split('=')[1])
path = db.add_asset({{'type': 'summary', 'name': 'summary', 'file': 'summary.txt'}}, 'summary')
with open(path, 'w', encoding='utf-8') as f:
    f.write('groups=%d samples=%d sum=%r\\n' % (len(groups), samples, grand))
    f.write(''.join(line + '\\n' for line in out))
'''

GS_SCRIPTS = {"sample.py": _SAMPLE_PY, "group.py": _GROUP_PY, "summary.py": _SUMMARY_PY}

_IMPORTS = {
    # what the brief's scripts use; thotd's `thot` package exports ThotProject = LocalProject
    "thot": ("from thot import ThotProject", "ThotProject"),
    # the seed's spelling; also what thot-data 0.0.2 itself understands
    "local": ("from thot.thot import LocalProject", "LocalProject"),
}


def sample_values(group_name: str, sample_name: str, n: int = 5) -> list[int]:
    """The raw numbers of a G×S sample: a deterministic function of its names."""
    h = zlib.crc32(f"{group_name}/{sample_name}".encode())
    return [(h >> (3 * k)) % 1000 for k in range(n)]


def _trailing_int(name: str) -> int | None:
    digits = ""
    for ch in reversed(name):
        if not ch.isdigit():
            break
        digits = ch + digits
    return int(digits) if digits else None


def add_sample(
    project_root: Path,
    group_name: str,
    sample_name: str,
    *,
    index: int | None = None,
    values: list[float] | None = None,
    pause: float = 0.0,
    script: str = "root:/../analysis/sample.py",
) -> Path:
    """Drop a new sample into a G×S project, file by file, as a file manager would.

    Order: ``mkdir sample``, ``_container.json``, ``_scripts.json``, ``mkdir raw``,
    ``raw/_asset.json``, ``raw/data.csv`` — with ``pause`` seconds between steps (to let a
    watcher see the partial states).  ``script`` is the sample's association.  ``index`` (the sample's ``metadata.sample``) defaults to
    the trailing number of ``sample_name``; ``values`` default to :func:`sample_values`.
    Returns the sample folder.
    """
    group = Path(project_root) / group_name
    if not group.is_dir():
        raise FileNotFoundError(f"group folder {group} does not exist")
    if index is None:
        index = _trailing_int(sample_name)
    if values is None:
        values = sample_values(group_name, sample_name)

    def step() -> None:
        if pause:
            time.sleep(pause)

    sample = group / sample_name
    sample.mkdir()
    step()
    _write_json(
        sample / "_container.json",
        {"name": sample_name, "type": "sample", "tags": [], "metadata": {"sample": index}},
    )
    step()
    _write_json(
        sample / "_scripts.json",
        [{"script": script, "priority": 0, "autorun": True}],
    )
    step()
    raw = sample / "raw"
    raw.mkdir()
    step()
    _write_json(
        raw / "_asset.json",
        {
            "name": f"{sample_name} raw",
            "type": "raw",
            "file": "data.csv",
            "tags": [],
            "metadata": {},
        },
    )
    step()
    (raw / "data.csv").write_text("value\n" + "".join(f"{v}\n" for v in values), encoding="utf-8")
    return sample


def make_gs(
    root: Path,
    groups: int,
    samples: int,
    *,
    script_dir_name: str = "analysis",
    api: str = "thot",
) -> Path:
    """Write the G×S analysis project and its scripts; return the **project root**.

    Layout (``root`` is a working folder, not the project)::

        root/analysis/sample.py      raw -> 'stats' asset (stats/stats.txt), per sample
        root/analysis/group.py       'stats' assets -> 'group_stats' asset, per group
        root/analysis/summary.py     'group_stats' assets -> 'summary' asset, at the root
        root/project/                project root container, type "project",
            _container.json          metadata {"project": "gs"}
            _scripts.json            -> root:/../analysis/summary.py
            group-00/                type "group", metadata {"group": 0}
                _scripts.json        -> root:/../analysis/group.py
                sample-000/          type "sample", metadata {"sample": 0}
                    _scripts.json    -> root:/../analysis/sample.py
                    raw/             asset type "raw", file data.csv (header + 5 numbers)

    ``root:/`` is the project root folder, so ``root:/../analysis`` is ``root/analysis``.  With
    ``script_dir_name`` the scripts folder is renamed (the associations follow).  ``api``
    picks the scripts' import line: ``"thot"`` (``from thot import ThotProject``) or
    ``"local"`` (``from thot.thot import LocalProject``, the seed's spelling).  Outputs are a
    deterministic function of the inputs: a full and an incremental run compare byte for byte.
    """
    root = Path(root)
    import_line, ctor = _IMPORTS[api]
    scripts_dir = root / script_dir_name
    scripts_dir.mkdir(parents=True, exist_ok=True)
    for fname, text in GS_SCRIPTS.items():
        (scripts_dir / fname).write_text(
            text.format(import_line=import_line, ctor=ctor), encoding="utf-8"
        )
    rel = f"root:/../{script_dir_name}"

    project = root / "project"
    project.mkdir(parents=True)
    _write_json(
        project / "_container.json",
        {"name": "project", "type": "project", "tags": [], "metadata": {"project": "gs"}},
    )
    _write_json(
        project / "_scripts.json", [{"script": f"{rel}/summary.py", "priority": 0, "autorun": True}]
    )
    gw = len(str(max(groups - 1, 1)))
    sw = max(3, len(str(max(samples - 1, 1))))
    for g in range(groups):
        gname = f"group-{g:0{gw}d}"
        gdir = project / gname
        gdir.mkdir()
        _write_json(
            gdir / "_container.json",
            {"name": gname, "type": "group", "tags": [], "metadata": {"group": g}},
        )
        _write_json(
            gdir / "_scripts.json", [{"script": f"{rel}/group.py", "priority": 0, "autorun": True}]
        )
        for s in range(samples):
            add_sample(project, gname, f"sample-{s:0{sw}d}", index=s, script=f"{rel}/sample.py")
    return project


# --- CLI ----------------------------------------------------------------------------------


def _count(root: Path) -> tuple[int, int]:
    c = a = 0
    for _dirpath, _dirs, files in os.walk(root):
        c += "_container.json" in files
        a += "_asset.json" in files
    return c, a


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate Thot project trees.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flat", help="big realistic tree (indexing benches)")
    f.add_argument("dir", type=Path)
    f.add_argument("--containers", type=int, required=True)
    f.add_argument("--assets", type=int, required=True)
    f.add_argument("--depth", type=int, default=3)
    f.add_argument("--seed", type=int, default=0)
    g = sub.add_parser("gs", help="G×S analysis project (incremental benches)")
    g.add_argument("dir", type=Path)
    g.add_argument("--groups", type=int, required=True)
    g.add_argument("--samples", type=int, required=True)
    g.add_argument("--script-dir-name", default="analysis")
    g.add_argument("--api", choices=sorted(_IMPORTS), default="thot")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    if args.cmd == "flat":
        if args.dir.exists() and any(args.dir.iterdir()):
            ap.error(f"{args.dir} exists and is not empty")
        out = make_flat(args.dir, args.containers, args.assets, depth=args.depth, seed=args.seed)
    else:
        if (args.dir / "project").exists():
            ap.error(f"{args.dir / 'project'} already exists")
        out = make_gs(
            args.dir, args.groups, args.samples, script_dir_name=args.script_dir_name, api=args.api
        )
    c, a = _count(out)
    print(f"{out}: {c} containers, {a} assets ({time.perf_counter() - t0:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
