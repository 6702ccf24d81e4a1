"""The dashboard's rules at the HTTP level, with aiohttp's test client and a scripted
:class:`~thotd.web.source.Source` (no daemon: these are the rules alone, each with the
request that must be refused next to the one that must pass)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from thotd.web import files
from thotd.web.server import make_app

SECRET = "s" * 43


class FakeSource:
    """Answers ``status`` for one project with no runs; records the calls."""

    def __init__(self, root: Path, state: Path) -> None:
        self.root, self._state, self.calls = str(root), state, []  # type: ignore[var-annotated]

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        if method == "status":
            return {"summary": "1 project", "healthy": True, "problems": [], "projects": [{
                "root": self.root, "paused": False, "error": None, "watch": None, "queued": [],
                "running": [], "blocked": [], "invalid": [], "failures": [], "objects": 1,
                "runs": 0, "counts": {}}]}
        return {"runs": {"runs": []}, "plan": {"plan": []}, "query": {"objects": []}}.get(method, {})

    def objects(self, root: str, ids: list[str]) -> list[dict[str, Any]]:
        return [{"_id": self.root, "name": "proj", "children": [], "assets": [], "scripts": [],
                 "metadata": {}, "notes": [], "parent": None} for i in ids if i == self.root]

    def subscribe(self) -> Any:
        raise RuntimeError("no events here")

    def roots(self) -> list[str]:
        return [self.root]

    @property
    def state_dir(self) -> Path:
        return self._state


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "plots").mkdir(parents=True)
    (root / "_container.json").write_text("{}")
    (root / "plots" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "plots" / "evil.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    (root / "plots" / "data.bin").write_bytes(b"\0\1")
    (tmp_path / "secret.txt").write_text("not yours")
    return root


Body = Callable[[TestClient[Any, Any], FakeSource], Awaitable[None]]


def serve(project: Path, state: Path, body: Body) -> None:
    """Run ``body(client, source)`` against the app on a real loopback port."""

    async def main() -> None:
        source = FakeSource(project, state)
        port: dict[str, int] = {}
        app = make_app(source, SECRET, lambda: {f"127.0.0.1:{port['n']}", f"localhost:{port['n']}"})
        server = TestServer(app, host="127.0.0.1")
        async with TestClient(server) as c:
            port["n"] = server.port or 0
            await body(c, source)

    asyncio.run(main())


def host(c: TestClient[Any, Any]) -> str:
    return f"127.0.0.1:{c.server.port}"


def authed(c: TestClient[Any, Any], **extra: str) -> dict[str, str]:
    return {"Host": host(c), "Cookie": f"thotd_token={SECRET}", **extra}


async def get(c: TestClient[Any, Any], path: str, headers: dict[str, str]
              ) -> tuple[int, Any, str]:
    async with c.get(path, headers=headers, allow_redirects=False) as r:
        return r.status, r.headers, await r.text(errors="replace")


def test_host_header_must_be_ours(project: Path, tmp_path: Path) -> None:
    async def body(c: TestClient[Any, Any], source: FakeSource) -> None:
        for bad in ("evil.example", f"evil.example:{c.server.port}", "127.0.0.1:1", ""):
            status, _, text = await get(c, "/", authed(c, Host=bad))
            assert status == 403 and "Host" in text, bad
        assert (await get(c, "/", authed(c)))[0] == 200
        assert (await get(c, "/", authed(c, Host=f"localhost:{c.server.port}")))[0] == 200
        assert source.calls == [("status", {}), ("status", {})]  # refused ones asked nothing

    serve(project, tmp_path, body)


def test_token_once_becomes_a_strict_httponly_cookie(project: Path, tmp_path: Path) -> None:
    async def body(c: TestClient[Any, Any], source: FakeSource) -> None:
        status, headers, _ = await get(c, f"/runs?token={SECRET}&x=1", {"Host": host(c)})
        assert status == 303 and headers["Location"] == "/runs?x=1"
        cookie = headers["Set-Cookie"]
        assert f"thotd_token={SECRET}" in cookie and "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        c.session.cookie_jar.clear()  # from here on, a browser that never had the token
        assert (await get(c, "/?token=wrong", {"Host": host(c)}))[0] == 403
        assert (await get(c, "/", {"Host": host(c)}))[0] == 403
        assert (await get(c, "/", {"Host": host(c), "Cookie": "thotd_token=nope"}))[0] == 403
        assert (await get(c, "/static/app.js", {"Host": host(c)}))[0] == 403

    serve(project, tmp_path, body)


def test_actions_need_our_origin(project: Path, tmp_path: Path) -> None:
    async def body(c: TestClient[Any, Any], source: FakeSource) -> None:
        form = {"path": source.root, "back": "/"}
        for origin in (None, "null", "http://evil.example", f"http://localhost:{c.server.port}"):
            extra = {"Origin": origin} if origin else {}
            async with c.post("/action/pause", data=form, headers=authed(c, **extra),
                              allow_redirects=False) as r:
                assert r.status == 403, origin
        assert all(m != "pause" for m, _ in source.calls)
        async with c.post("/action/pause", data=form, allow_redirects=False,
                          headers=authed(c, Origin=f"http://{host(c)}")) as r:
            assert r.status == 303
        assert ("pause", {"path": source.root}) in source.calls
        async with c.post("/action/pause", data={**form, "back": "//evil.example/"},
                          allow_redirects=False, headers=authed(c, Origin=f"http://{host(c)}")) as r:
            assert r.headers["Location"] == "/"  # never an open redirect
        async with c.post("/action/stop", data=form, allow_redirects=False,
                          headers=authed(c, Origin=f"http://{host(c)}")) as r:
            assert r.status == 404  # only rerun, pause, resume

    serve(project, tmp_path, body)


def test_every_page_has_nosniff_and_a_strict_csp(project: Path, tmp_path: Path) -> None:
    async def body(c: TestClient[Any, Any], source: FakeSource) -> None:
        for path in ("/", "/runs", "/static/app.js", f"/project?root={source.root}"):
            status, headers, _ = await get(c, path, authed(c))
            assert headers["X-Content-Type-Options"] == "nosniff", path
            csp = headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp, path
            assert "frame-ancestors 'none'" in csp
        status, headers, _ = await get(c, "/", {"Host": host(c)})
        assert status == 403 and headers["X-Content-Type-Options"] == "nosniff"

    serve(project, tmp_path, body)


def test_files_only_inside_the_project_and_never_as_active_content(project: Path, tmp_path: Path) -> None:
    (project / "plots" / "out.png").symlink_to(tmp_path / "secret.txt")
    (project / "plots" / "in.png").symlink_to(project / "plots" / "a.png")

    async def body(c: TestClient[Any, Any], source: FakeSource) -> None:
        p = project / "plots"
        status, headers, _ = await get(c, f"/file?path={p / 'a.png'}", authed(c))
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert (await get(c, f"/file?path={p / 'in.png'}", authed(c)))[0] == 200
        for bad in (p / "out.png", f"{project}/../secret.txt", "/etc/passwd", "plots/a.png",
                    f"{project}/../../../../../../etc/passwd", p, p / "missing.png"):
            status, _, text = await get(c, f"/file?path={bad}", authed(c))
            assert status == 403 and "not yours" not in text and "root:" not in text, bad
        status, headers, _ = await get(c, f"/file?path={p / 'evil.svg'}", authed(c))
        assert status == 200 and headers["Content-Type"] == "image/svg+xml"
        assert headers["Content-Disposition"].startswith("attachment")
        assert "sandbox" in headers["Content-Security-Policy"]
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        status, headers, _ = await get(c, f"/file?path={p / 'data.bin'}", authed(c))
        assert headers["Content-Type"] == "application/octet-stream"
        assert headers["Content-Disposition"].startswith("attachment")

    serve(project, tmp_path, body)


def test_inside_compares_real_paths(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.txt").write_text("x")
    (tmp_path / "p-other").mkdir()
    (tmp_path / "p-other" / "g.txt").write_text("x")
    assert files.inside(str(root / "sub" / "f.txt"), [str(root)]) == str(root / "sub" / "f.txt")
    with pytest.raises(files.Refused):  # a sibling whose name starts like the root
        files.inside(str(tmp_path / "p-other" / "g.txt"), [str(root)])
    with pytest.raises(files.Refused):
        files.inside(str(root / "sub" / ".." / ".." / "p-other" / "g.txt"), [str(root)])


def test_the_script_api_and_thotctl_never_import_the_web_stack() -> None:
    code = ("import sys, thot, thot.thot, thotd.cli.thotctl\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'jinja2')"
            " or m == 'thotd.web.server'))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    assert out.strip() == "[]"
