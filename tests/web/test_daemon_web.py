"""The daemon's side: the page starts with the daemon and stops with it, a taken port is a
warning and not a failed start, ``[web] enabled = false`` serves nothing, the token file is
private, and ``thotctl web`` prints the address the daemon really got."""

from __future__ import annotations

import socket
import stat
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from corekit import wait_for
from daemonkit import make_daemon
from inprocess import small_config

from thotd.service.daemon import Daemon
from thotd.web import secret


def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5)
    except urllib.error.HTTPError:
        return False  # something answered
    except OSError:
        return True
    return False


def test_page_lives_and_dies_with_the_daemon(in_daemon: Any) -> None:
    seen: dict[str, Any] = {}

    async def body(d: Daemon) -> None:
        folder = d.store_path.parent
        address = secret.read_address(folder)
        assert address is not None
        seen["url"] = address["url"]
        mode = stat.S_IMODE((folder / secret.TOKEN_NAME).stat().st_mode)
        assert mode == 0o600 and stat.S_IMODE((folder / secret.ADDRESS_NAME).stat().st_mode) == 0o600
        seen["folder"] = folder
        # answering (403 without the token) while the daemon runs
        import asyncio

        def fetch() -> int:
            try:
                urllib.request.urlopen(address["url"], timeout=5)
            except urllib.error.HTTPError as exc:
                return exc.code
            return 200

        assert await asyncio.to_thread(fetch) == 403

    in_daemon(body, config=small_config(web={"enabled": True, "port": 0}))
    assert refused(seen["url"])  # stopped with the daemon
    assert secret.read_address(seen["folder"]) is None


def test_disabled_serves_nothing(in_daemon: Any) -> None:
    async def body(d: Daemon) -> None:
        assert secret.read_address(d.store_path.parent) is None
        assert not (d.store_path.parent / secret.TOKEN_NAME).exists()
        assert d.web == "off"

    in_daemon(body, config=small_config(web={"enabled": False, "port": 0}))


def test_a_taken_port_is_a_warning_and_the_daemon_runs_on(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with make_daemon(tmp_path, web={"enabled": True, "port": port}) as d:
            d.start()  # the socket answers before the page is tried: wait for its verdict
            wait_for(lambda: d.status()["web"] != "starting", what="the page's start to end")
            st = d.status()
            assert st["healthy"] and st["web"] == "not serving"
            out = d.output()
            assert f"port {port} is in use" in out and "[web] port" in out, out[-2000:]
            res = d.ctl("web")
            assert res.returncode == 1 and "not serving" in res.stderr


def test_thotctl_web_prints_the_real_address_with_the_token(tmp_path: Path) -> None:
    with make_daemon(tmp_path, web={"enabled": True, "port": 0}) as d:
        d.start()  # answers while the web stack still loads: thotctl web waits for the page
        res = d.ctl("web")
        assert res.returncode == 0, res.stderr
        assert d.status()["web"] == "serving"
        login = res.stdout.strip()
        key = secret.token(d.state_dir, create=False)
        assert key and login.endswith(f"?token={key}") and ":0/" not in login
        data = d.ctl_json("web")
        assert data["login"] == login
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(login, timeout=10) as r:  # the token, then the cookie, then the page
            assert r.status == 200 and r.url == data["url"]
            assert b"Projects" in r.read()


def test_thotctl_web_open_hands_the_login_url_to_the_browser(tmp_path: Path) -> None:
    opened = tmp_path / "opened.txt"
    fake = tmp_path / "fake-browser.py"
    fake.write_text(f"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])\n")
    with make_daemon(tmp_path, web={"enabled": True, "port": 0}) as d:
        d.start()
        res = d.ctl("web", "--open", env={"BROWSER": f"{sys.executable} {fake} %s"})
        assert res.returncode == 0, res.stderr
        assert opened.read_text() == res.stdout.strip()
        assert "?token=" in opened.read_text()


@pytest.mark.parametrize("value", ["0.0.0.0", "192.168.1.10"])
def test_only_loopback_hosts_are_accepted(value: str) -> None:
    from thotd.service.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="web.host"):
        parse_config({"web": {"host": value}}, source="config.toml")
