"""The dashboard: a local web page of the projects, runs, logs and newest plots, live.

Owns the HTTP side only (aiohttp + Jinja2, imported when the dashboard is on); it reads the
daemon through :class:`~thotd.web.source.Source` and may import engine, executor, project
and the leaves, never ``thotd.service`` (the daemon hands it a source at start-up).
"""
