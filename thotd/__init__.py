"""thotd: Thot projects whose analysis keeps itself up to date.

Rooms, one way down (a module imports only from its own room or the ones below it;
``tests/test_layers.py`` enforces it)::

    cli       the thot, thotd and thotctl commands
    service   the daemon: lifecycle, watcher, control socket, config, logs, systemd
    web       the dashboard: pages, live events, files (served from the daemon's loop)
    engine    runs and records: staleness, dispatch, explain, state, snapshot
    executor  how a run happens: process control, the fork server, local | dask executors
    project   what a project is: object files, model, index, search

The modules beside this file (``paths``, ``slotted``, ``digest``, ``fingerprint``) are
leaves every room may use; they import nothing from thotd but each other.  Every ``__init__.py`` stays free of imports: the
``thot`` script API imports parts of ``project`` and ``engine``, and a script must not pay
for what it does not use.
"""
