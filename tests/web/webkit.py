"""The dashboard tests' kit: the project (a summary that draws a PNG, a check that can
fail), the headless Chromium, and small page helpers. A module with a unique name, so the
tests import it as ``from webkit import ...`` (``conftest`` holds only the fixtures)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from corekit import make_tree, missing, wait_for
from daemonkit import Daemon

#: A PNG without any imaging library: ``width`` x 8 pixels, grey; the summary draws one
#: 10 pixels wide per sample, so a new sample shows as a wider plot.
PNG_PY = '''
import struct, zlib
def png(width, height=8):
    raw = b"".join(b"\\x00" + bytes([90, 140, 200]) * width for _ in range(height))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
'''

SAMPLE_PY = '''
from thot import ThotProject
db = ThotProject()
raw = db.find_asset({"type": "raw"})
values = [float(x) for x in open(raw.file).read().split()[1:]]  # a CSV: header, then values
path = db.add_asset({"name": "stats", "type": "stats", "file": "stats.txt"}, "stats")
open(path, "w").write(str(sum(values) / len(values)))
'''

SUMMARY_PY = PNG_PY + '''
from thot import ThotProject
db = ThotProject()
stats = db.find_assets({"type": "stats"})
path = db.add_asset({"name": "plot", "type": "plot", "file": "plot.png"}, "plot")
open(path, "wb").write(png(10 * len(stats)))
'''

#: No library: any change in its container's assets makes it stale. Fails when its value
#: asset says bad.
CHECK_PY = '''
import os, sys
text = open(os.path.join(os.environ["THOT_CONTAINER_ID"], "value", "value.txt")).read()
if "bad" in text:
    print("boom: the calibration is bad", file=sys.stderr)
    sys.exit(3)
print("calibration ok")
'''


#: Prints a line every 0.2 s for ~3 s: long enough to watch its log grow in the page.
SLOW_PY = '''
import time
for i in range(15):
    print(f"tick {i}", flush=True)
    time.sleep(0.2)
print("slow done", flush=True)
'''


def sample(name: str, values: str = "1 2 3") -> dict[str, Any]:
    """A sample container with its raw CSV (a header line, then one value a line)."""
    return {
        "_container.json": {"name": name, "type": "sample", "metadata": {"sample": name}},
        "_scripts.json": [{"script": "root:/../analysis/sample.py"}],
        "raw": {"_asset.json": {"name": "raw", "type": "raw", "file": "data.csv"},
                "data.csv": "value\n" + "\n".join(values.split()) + "\n"},
    }


def make_project(base: Path) -> Path:
    make_tree(base / "analysis", {"sample.py": SAMPLE_PY, "summary.py": SUMMARY_PY,
                                  "check.py": CHECK_PY, "slow.py": SLOW_PY})
    root = make_tree(base / "project", {
        "_container.json": {"name": "lab", "type": "project", "metadata": {"lab": "optics"}},
        "_scripts.json": [{"script": "root:/../analysis/summary.py"}],
        "s1": sample("s1"), "s2": sample("s2", "4 5 6"),
        "calib": {"_container.json": {"name": "calib", "type": "check"},
                  "_scripts.json": [{"script": "root:/../analysis/check.py"}],
                  "value": {"_asset.json": {"name": "value", "type": "value", "file": "value.txt"},
                            "value.txt": "good"}},
    })
    return root


class Dash:
    """The daemon, its project and the page's addresses."""

    def __init__(self, daemon: Daemon, root: Path, url: str, login: str, shots: Path) -> None:
        self.daemon, self.root, self.url, self.login, self.shots = daemon, root, url, login, shots

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])




def chromium_or_skip() -> tuple[str, str]:
    """The chromium and chromedriver executables; skip (fail under CI) without them."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    absent = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        absent.append("selenium (pip)")
    if absent:
        missing(f"browser tests need {', '.join(absent)}: apt-get install chromium "
                "chromium-driver; pip install selenium")
    assert browser and driver
    return browser, driver


def body_text(drv: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(drv.find_element(By.TAG_NAME, "body").text)


def shot(drv: Any, dash: Dash, name: str) -> Path:
    """A screenshot under the test run's temporary output (never the checkout)."""
    path = dash.shots / f"{name}.png"
    drv.save_screenshot(str(path))
    print(f"screenshot: {path}", file=sys.stderr)
    return path


def runs_of(dash: Dash) -> list[dict[str, Any]]:
    return dash.daemon.runs()


def wait_js(drv: Any, script: str, timeout: float = 30, what: str = "page condition") -> Any:
    return wait_for(lambda: drv.execute_script(script), timeout, what, interval=0.05)


def wait_live(drv: Any) -> None:
    """Until the page's event stream is connected: a change made before would have its
    events sent to nobody, and the page would learn of it only with the next one."""
    wait_js(drv, "return document.getElementById('live').textContent.includes('live')",
            what="the event stream to connect")
