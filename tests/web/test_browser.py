"""The issue's end-to-end checks, in a real headless Chromium against a real ``thotd``.

One daemon and one browser for the module (starting Chromium costs seconds); the tests run
in file order and each leaves the project as the next expects (the order is the story: log
in, look, drop a sample, break a check, try the attacks).
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

from corekit import make_tree, wait_for
from webkit import Dash, body_text, sample, shot, wait_js, wait_live

PLOT_IMG = "document.querySelector('.plots img')"


def q(path: Path | str) -> str:
    return urllib.parse.quote(str(path), safe="")


def test_the_token_url_logs_in_and_leaves_the_address_bar(browser: Any, dash: Dash) -> None:
    browser.get(dash.login)
    assert browser.current_url == dash.url  # the token became a cookie, the URL is clean
    assert "Projects" in body_text(browser) and str(dash.root) in body_text(browser)
    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert cookies["thotd_token"]["httpOnly"] and cookies["thotd_token"]["sameSite"] == "Strict"
    shot(browser, dash, "projects")


def test_project_page_shows_the_tree_states_and_the_plot(browser: Any, dash: Dash) -> None:
    browser.get(f"{dash.url}project?root={q(dash.root)}")
    wait_live(browser)
    states = browser.execute_script(
        "return Array.from(document.querySelectorAll('#tree li.node'), "
        "li => [li.dataset.node, li.className])")
    assert {os.path.basename(n): c for n, c in states}.keys() == {"calib", "s1", "s2"}
    assert all("st-fresh" in c for _, c in states), states
    width = wait_js(browser, f"const i = {PLOT_IMG}; return i && i.complete && i.naturalWidth",
                    what="the summary plot")
    assert width == 20  # two samples, 10 pixels each
    shot(browser, dash, "project")


def test_a_dropped_sample_updates_runs_and_plot_without_reload(browser: Any, dash: Dash) -> None:
    browser.get(f"{dash.url}project?root={q(dash.root)}")
    wait_live(browser)
    # A marker a reload would wipe, and the time the new plot shows (browser clock, ms).
    browser.execute_script("""
        window.__same_page = true;
        new MutationObserver(() => {
          const img = document.querySelector('.plots img');
          if (!img) return;
          const seen = () => { if (img.naturalWidth === 30 && !window.__plot_at) window.__plot_at = Date.now(); };
          if (img.complete) seen(); else img.addEventListener('load', seen);
        }).observe(document.querySelector('.plots'), {childList: true, subtree: true});
    """)
    objects = browser.execute_script("return document.querySelector('.summary').textContent")
    make_tree(dash.root / "s3", sample("s3", "7 8 9"))
    wait_js(browser, f"const i = {PLOT_IMG}; return i && i.complete && i.naturalWidth === 30",
            what="the plot of three samples")
    assert browser.execute_script("return window.__same_page") is True
    wait_js(browser, f"return document.querySelector('.summary').textContent !== {objects!r}",
            what="the object count to follow")
    # the tree grew a row for s3, live too
    wait_js(browser, "return Array.from(document.querySelectorAll('#tree li.node'))"
            ".some(li => li.dataset.node.endsWith('/s3'))", what="s3 in the tree")
    summary = [r for r in dash.daemon.runs() if r["container"] == str(dash.root)
               and r["status"] == "ok"]
    finished_ms = max(r["finished"] for r in summary) * 1000
    shown_ms = wait_js(browser, "return window.__plot_at", what="the plot's load time")
    assert shown_ms - finished_ms < 1000, f"plot shown {shown_ms - finished_ms:.0f} ms after its run"
    shot(browser, dash, "project-after-drop")

    browser.get(f"{dash.url}runs")
    wait_live(browser)
    browser.execute_script("window.__same_page = true")
    first = browser.execute_script("return document.querySelectorAll('tr.run').length")
    make_tree(dash.root / "s4", sample("s4", "1 1 1"))
    wait_js(browser, "return Array.from(document.querySelectorAll('tr.run'))"
            ".some(tr => tr.textContent.includes('s4') && tr.textContent.includes('ok'))",
            what="the run of s4 in the live list")
    assert browser.execute_script("return window.__same_page") is True
    assert browser.execute_script("return document.querySelectorAll('tr.run').length") > first
    shot(browser, dash, "runs")


def test_a_failing_script_turns_its_container_red_with_the_log_tail(browser: Any, dash: Dash) -> None:
    browser.get(f"{dash.url}project?root={q(dash.root)}")
    wait_live(browser)
    node = dash.root / "calib"
    (node / "value" / "value.txt").write_text("bad")
    find = f"Array.from(document.querySelectorAll('#tree li.node')).find(li => li.dataset.node === {str(node)!r})"
    wait_js(browser, f"const li = {find}; return li && li.classList.contains('st-failed')",
            what="calib to turn failed")
    tail = browser.execute_script(f"return {find}.querySelector('.tail').textContent")
    assert "boom: the calibration is bad" in tail
    colour = browser.execute_script(f"return getComputedStyle({find}.querySelector('.dot')).backgroundColor")
    assert colour == "rgb(211, 47, 47)"  # --failed
    shot(browser, dash, "project-failed")
    browser.get(f"{dash.url}container?path={q(node)}")
    assert "boom: the calibration is bad" in body_text(browser)
    run_id = max(r["id"] for r in dash.daemon.runs() if r["container"] == str(node))
    browser.get(f"{dash.url}run?id={run_id}")
    assert "boom: the calibration is bad" in body_text(browser)
    shot(browser, dash, "run-failed")


def test_a_collapsed_subtree_shows_the_worst_state_below_and_opens_on_demand(
        browser: Any, dash: Dash) -> None:
    browser.get(f"{dash.url}project?root={q(dash.root)}")
    wait_live(browser)
    check = {"_scripts.json": [{"script": "root:/../analysis/check.py"}],
             "value": {"_asset.json": {"name": "value", "file": "value.txt"}, "value.txt": "bad"}}
    make_tree(dash.root / "batch", {
        "_container.json": {"name": "batch"},
        "b1": {"_container.json": {"name": "b1"}},
        "b2": {"_container.json": {"name": "b2"}, **check},
    })
    batch = f"Array.from(document.querySelectorAll('#tree li.node')).find(li => li.dataset.node === {str(dash.root / 'batch')!r})"
    wait_js(browser, f"const li = {batch}; return li && li.querySelector('.below').textContent.includes('failed')",
            what="batch to show a failure below it")
    assert browser.execute_script(f"return {batch}.querySelectorAll('li.node').length") == 0
    browser.execute_script(f"{batch}.querySelector('a.expand').click()")
    wait_js(browser, f"return {batch}.querySelectorAll('li.node').length === 2", what="b1 and b2")
    b2 = browser.execute_script(
        f"return Array.from({batch}.querySelectorAll('li.node'), li => li.className + ' ' + li.textContent)")
    assert any("st-failed" in text and "boom" in text for text in b2), b2
    shot(browser, dash, "project-expanded")


def test_a_running_run_shows_its_log_growing(browser: Any, dash: Dash) -> None:
    browser.get(f"{dash.url}runs")
    wait_live(browser)
    make_tree(dash.root / "slow", {"_container.json": {"name": "slow"},
                                   "_scripts.json": [{"script": "root:/../analysis/slow.py"}]})
    link = "Array.from(document.querySelectorAll('tr.run')).find(tr => tr.textContent.includes('slow.py') && tr.textContent.includes('running'))"
    wait_js(browser, f"return !!{link}", what="the slow run listed as running")  # no element:
    # the list is re-rendered on every event, and a returned element can go stale
    browser.execute_script(f"{link}.querySelector('a').click()")
    wait_js(browser, "return document.querySelector('pre.log') && document.querySelector('pre.log').dataset.running === 'yes'",
            what="the run page of a running run")
    browser.execute_script("window.__same_page = true")
    first = browser.execute_script("return document.querySelector('pre.log').textContent")
    wait_js(browser, "return document.querySelector('pre.log').textContent.includes('slow done')",
            what="the log to reach its end")
    assert "slow done" not in first  # it grew while we watched, without a reload
    assert browser.execute_script("return window.__same_page") is True
    wait_js(browser, "return !!document.querySelector('#log .st-ok')", what="the run shown ok")
    shot(browser, dash, "run-live")


def test_an_image_asset_renders_on_its_container_page(browser: Any, dash: Dash) -> None:
    browser.get(f"{dash.url}container?path={q(dash.root)}")
    width = wait_js(browser, "const i = document.querySelector('.assets img');"
                    " return i && i.complete && i.naturalWidth", what="the plot image")
    assert width > 0
    assert "inherited" not in body_text(browser).split("Assets")[0]  # the root's own metadata
    browser.get(f"{dash.url}container?path={q(dash.root / 's1')}")
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.meta tr'), tr => tr.textContent)")
    assert any("lab" in r and "inherited" in r for r in rows), rows  # from the root, marked
    assert any("sample" in r and "inherited" not in r for r in rows), rows
    shot(browser, dash, "container")
    browser.get(f"{dash.url}container?path={q(dash.root / 's1' / 'raw')}")  # an asset: no page
    assert "not a container" in body_text(browser)
    browser.get(f"{dash.url}graph?root={q(dash.root)}")
    assert browser.execute_script("return document.querySelectorAll('svg.graph rect').length") >= 4
    shot(browser, dash, "graph")


def test_csv_assets_show_their_first_rows(browser: Any, dash: Dash) -> None:
    (dash.root / "s1" / "table").mkdir()
    (dash.root / "s1" / "table" / "_asset.json").write_text('{"name": "table", "file": "t.tsv"}')
    (dash.root / "s1" / "table" / "t.tsv").write_text("a\tb\n1\t<b>2</b>\n")
    dash.daemon.wait_quiet()
    browser.get(f"{dash.url}container?path={q(dash.root / 's1')}")
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.preview td'), td => td.textContent)")
    assert cells[:4] == ["value", "1", "2", "3"]  # the raw CSV, then the TSV
    assert cells[4:] == ["a", "b", "1", "<b>2</b>"]  # markup shown as text, not rendered


def test_invalid_object_files_are_listed_with_their_error(browser: Any, dash: Dash) -> None:
    make_tree(dash.root / "broken", {"_container.json": "{not json"})
    wait_for(lambda: dash.daemon.project(dash.root)["invalid"], 30, "the invalid file")
    browser.get(f"{dash.url}project?root={q(dash.root)}")
    text = body_text(browser)
    assert "Invalid object files" in text and "broken/_container.json" in text, text
    (dash.root / "broken" / "_container.json").unlink()
    (dash.root / "broken").rmdir()


def test_pause_from_the_page_works(browser: Any, dash: Dash) -> None:
    browser.get(f"{dash.url}project?root={q(dash.root)}")
    browser.find_element("css selector", "form[action='/action/pause'] button").click()
    # (no page text in the message: read right after the click, the form's navigation may
    # have left no <body> yet)
    wait_for(lambda: dash.daemon.project(dash.root)["paused"], 30, "the project to pause")
    browser.find_element("css selector", "form[action='/action/resume'] button").click()
    wait_for(lambda: not dash.daemon.project(dash.root)["paused"], 30, "the project to resume")


def _paused(dash: Dash) -> list[str]:
    return [c["container"] for c in dash.daemon.project(dash.root)["paused_containers"]]


def test_pause_and_resume_a_container_from_its_page(browser: Any, dash: Dash) -> None:
    s1 = dash.root / "s1"
    page = f"{dash.url}container?path={q(s1)}"
    browser.get(page)
    wait_live(browser)
    assert browser.find_element("css selector", "form.container[action='/action/pause'] button"
                                ).text == "Pause container"
    browser.find_element("css selector", "form.container[action='/action/pause'] button").click()
    wait_for(lambda: _paused(dash) == [str(s1)], 30, "s1 to pause")
    assert not dash.daemon.project(dash.root)["paused"]  # the container, not the project
    browser.get(page)  # (the form's redirect may still be under way: load it ourselves)
    assert browser.execute_script("return document.querySelector('.tag.paused') !== null")

    # new data for s1: its run is queued and held, the rest of the project runs on
    before = {r["id"] for r in dash.daemon.runs()}
    raw = s1 / "raw" / "data.csv"
    raw.write_text(raw.read_text() + "4\n")
    wait_for(lambda: any(x["held"] and x["container"] == str(s1)
                         for x in dash.daemon.project(dash.root)["queued"]), 30, "s1's run held")
    browser.get(f"{dash.url}project?root={q(dash.root)}")
    wait_live(browser)
    marked = dict(browser.execute_script(
        "return Array.from(document.querySelectorAll('#tree li.node'), "
        "li => [li.dataset.node, !!li.querySelector(':scope > .tag.paused')])"))
    assert marked[str(s1)] and not any(v for k, v in marked.items() if k != str(s1)), marked
    shot(browser, dash, "project-container-paused")

    browser.get(page)
    wait_live(browser)
    browser.find_element("css selector", "form.container[action='/action/resume'] button").click()
    wait_for(lambda: _paused(dash) == [], 30, "s1 to resume")
    wait_for(lambda: any(r["id"] not in before and r["container"] == str(s1) and r["status"] == "ok"
                         for r in dash.daemon.runs()), 60, "s1's held run to run")
    dash.daemon.wait_quiet()


def test_files_outside_the_project_are_refused(browser: Any, dash: Dash) -> None:
    plot = dash.root / "plot" / "plot.png"
    browser.get(f"{dash.url}file?path={q(plot)}")
    assert browser.execute_script("return document.images.length && document.images[0].naturalWidth") > 0
    for path in (f"{dash.root}/../../../../../../etc/passwd", "/etc/passwd"):
        browser.get(f"{dash.url}file?path={q(path)}")
        text = body_text(browser)
        assert "403" in text and "root:" not in text, text
    link = dash.root / "s1" / "escape.txt"
    link.symlink_to("/etc/passwd")
    browser.get(f"{dash.url}file?path={q(link)}")
    text = body_text(browser)
    assert "403" in text and "outside" in text and "root:" not in text, text
    browser.get(f"{dash.url}file/../../etc/passwd")  # the path form: no such page, never the file
    assert "root:" not in body_text(browser)


def test_wrong_host_is_refused(browser: Any, dash: Dash) -> None:
    # rebind.test resolves to 127.0.0.1 in this browser: a DNS-rebinding page's own name
    browser.get(f"http://rebind.test:{dash.port}/")
    text = body_text(browser)
    assert "403" in text and "Host" in text, text


def test_no_token_is_refused(browser: Any, dash: Dash) -> None:
    browser.get(dash.url)  # cookies are deleted for the current page's host: be on ours
    browser.delete_all_cookies()
    browser.get(dash.url)
    assert "403" in body_text(browser) and "token" in body_text(browser)
    browser.get(dash.url + "?token=not-the-token")
    assert "403" in body_text(browser)
    shot(browser, dash, "refused")
