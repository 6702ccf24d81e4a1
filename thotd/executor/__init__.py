"""How a run happens: start a script as a process group, bound it, stop it; the fork server.

``process`` runs one :mod:`~thotd.executor.runspec` (sync or async; callers import from it),
``processgroup`` is the one place that starts, signals and stops processes, and
``forkserver`` forks Python runs from a preloaded interpreter.

May import: ``project`` and the leaf modules. Knows nothing of staleness or the daemon: it
is handed a run spec and returns how the run ended.
"""
