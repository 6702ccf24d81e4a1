"""The daemon: its lifecycle, the watcher, the control socket and its methods, config, logs,
systemd integration, and the socket's client.

May import: ``engine``, ``executor``, ``project`` and the leaf modules.
"""
