"""Fixtures of the dashboard tests: a real ``thotd`` with the page on a free port, a small
project whose summary draws a PNG, and a real headless Chromium driven by Selenium.

Why a real daemon process (``daemonkit``) and not the in-process one: the browser tests
are the issue's end-to-end checks (``thotctl web``, the token file, the port the daemon
reports), and a page served from the test's own loop would stall while the test blocks
on Selenium calls.

Chromium missing: the browser tests fail when ``CI=true`` (CI must run them; ``.ci/run``
installs it) and are skipped otherwise, with the reason in pytest's ``-ra`` summary.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from daemonkit import make_daemon
from webkit import Dash, chromium_or_skip, make_project


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    base = tmp_path_factory.mktemp("dash")
    root = make_project(base / "work")
    shots = tmp_path_factory.mktemp("screenshots")
    with make_daemon(base, web={"enabled": True, "port": 0}) as d:
        d.start()
        d.add(root)
        info = d.ctl_json("web")
        assert info["login"].startswith(info["url"] + "?token=")
        yield Dash(d, root, info["url"], info["login"], shots)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium of its own (fresh profile); ``rebind.test`` resolves to
    127.0.0.1 in it, as a DNS-rebinding attacker's name would."""
    exe, driver_path = chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900",
                 f"--user-data-dir={profile}",
                 "--host-resolver-rules=MAP rebind.test 127.0.0.1"):
        opts.add_argument(flag)
    log = profile.parent / "chromedriver.log"
    service = Service(executable_path=driver_path, log_output=str(log))
    drv = webdriver.Chrome(options=opts, service=service)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
