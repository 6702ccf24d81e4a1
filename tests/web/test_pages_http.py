"""Dashboard pages over real HTTP from a real ``thotd`` process (no browser): the projects
page's degraded-watch column, a container's notes, and pausing a container from its page.

The watch fallback is taken for real through the documented ``THOTD_MAX_WATCHES`` cap: the
lab project (7 folders) is polled, the one-folder project is watched.
"""

from __future__ import annotations

import html
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from corekit import make_tree, wait_for
from daemonkit import Daemon, make_daemon
from webkit import make_project

from thotd.service import watch_limits as limits


class Browserless:
    """urllib with the daemon's cookie: logs in with the token URL once."""

    def __init__(self, daemon: Daemon) -> None:
        info = daemon.ctl_json("web")
        self.url = info["url"]
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with self.opener.open(info["login"], timeout=30) as r:
            assert r.status == 200

    def get(self, path: str) -> str:
        with self.opener.open(self.url + path.lstrip("/"), timeout=30) as r:
            return str(r.read().decode("utf-8"))

    def post(self, path: str, form: dict[str, str]) -> int:
        req = urllib.request.Request(self.url + path.lstrip("/"),
                                     data=urllib.parse.urlencode(form).encode(),
                                     headers={"Origin": self.url.rstrip("/")})
        with self.opener.open(req, timeout=30) as r:  # follows the 303 back to the page
            return int(r.status)


def q(path: Path | str) -> str:
    return urllib.parse.quote(str(path), safe="")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path, Path, Browserless]]:
    base = tmp_path_factory.mktemp("pages")
    lab = make_project(base / "work")
    make_tree(lab / "s1" / "_notes", {"first look.txt": "noisy <b>baseline</b>\nredo on Monday"})
    tiny = make_tree(base / "tiny", {"_container.json": {"name": "tiny"}})
    with make_daemon(base, web={"enabled": True, "port": 0}) as d:
        d.env[limits.CAP_VAR] = "3"
        d.start()
        d.add(lab)
        d.add(tiny)
        yield d, lab, tiny, Browserless(d)


def _row(page: str, root: Path) -> str:
    """The projects table's row of ``root``."""
    rows = re.findall(r"<tr class=\"[^\"]*\">.*?</tr>", page, re.S)
    found = [r for r in rows if f">{root}</a>" in r]
    assert len(found) == 1, page
    return found[0]


def test_the_projects_page_says_which_watch_degraded_to_polling(site: Any) -> None:
    d, lab, tiny, web = site
    assert d.project(lab)["watch"]["reason"]  # the daemon polls it (the premise)
    for page in (web.get("/"), web.get("/fragment/projects")):
        polled, watched = _row(page, lab), _row(page, tiny)
        assert 'class="bad"' in polled and f"{limits.CAP_VAR}=3" in html.unescape(polled), polled
        assert 'class=""' in watched and "<td>ok</td>" in watched, watched


def test_a_container_page_shows_its_notes_as_text(site: Any) -> None:
    _d, lab, _tiny, web = site
    page = web.get(f"/container?path={q(lab / 's1')}")
    notes = page.split("<h2>Notes</h2>", 1)[1].split("</section>", 1)[0]
    assert "<h3>first look</h3>" in notes
    assert "noisy &lt;b&gt;baseline&lt;/b&gt;\nredo on Monday" in notes  # shown, not rendered
    assert "<h2>Notes</h2>" not in web.get(f"/container?path={q(lab / 's2')}")  # none: no section


def test_a_container_page_pauses_and_resumes_that_container(site: Any) -> None:
    d, lab, _tiny, web = site
    s2 = lab / "s2"
    page = web.get(f"/container?path={q(s2)}")
    assert ">Pause container</button>" in page and ">Resume container</button>" in page
    # a project page opened at s2: Rerun reruns s2's subtree, Pause holds the whole project
    forms = dict(re.findall(r'action="/action/(\w+)"><input type="hidden" name="path" value="([^"]+)"',
                            web.get(f"/project?node={q(s2)}")))
    assert forms == {"rerun": str(s2), "pause": str(lab), "resume": str(lab)}
    assert ">Pause project</button>" in web.get(f"/project?root={q(lab)}")
    back = f"/container?path={q(s2)}"
    assert web.post("/action/pause", {"path": str(s2), "back": back}) == 200
    st = d.project(lab)
    assert not st["paused"] and [c["container"] for c in st["paused_containers"]] == [str(s2)]
    assert 'class="tag paused"' in web.get(back)
    (s2 / "raw" / "data.csv").write_text("value\n4\n5\n")  # its run is queued, and held
    wait_for(lambda: any(x["held"] for x in d.project(lab)["queued"]), 30, "s2's run held")
    runs = web.get("/fragment/runs")
    held = [r for r in re.findall(r"<tr class=\"st-queued\">.*?</tr>", runs, re.S) if "paused" in r]
    assert len(held) == 1 and ">s2<" in held[0], runs
    tree = web.get(f"/fragment/tree?node={q(lab)}")
    marked = re.findall(r'data-node="([^"]+)">.*?</li>', tree, re.S)
    paused = [n for n, li in zip(marked, re.split(r"<li class=\"node", tree)[1:], strict=True)
              if 'class="tag paused"' in li]
    assert paused == [str(s2)], tree
    assert web.post("/action/resume", {"path": str(s2), "back": back}) == 200
    wait_for(lambda: d.project(lab)["paused_containers"] == [], 10, "the container to resume")
    assert 'class="tag paused"' not in web.get(f"/fragment/tree?node={q(lab)}")


def test_an_action_the_daemon_refuses_is_a_400_that_says_why(site: Any) -> None:
    """Pause of an asset folder: the page never offers it, a hand-made POST gets the reason."""
    _d, lab, _tiny, web = site
    asset = next(p.parent for p in lab.rglob("_asset.json"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        web.post("/action/pause", {"path": str(asset), "back": "/"})
    assert refused.value.code == 400
    body = refused.value.read().decode()
    assert "not a container" in body and str(asset) in body, body
