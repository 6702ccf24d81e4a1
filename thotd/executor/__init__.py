"""How a run happens: start a script as a process group, bound it, stop it; the fork server.

May import: ``project`` and the leaf modules. Knows nothing of staleness or the daemon: it
is handed a run spec and returns how the run ended.
"""
