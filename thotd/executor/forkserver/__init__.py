"""The fork server ("zygote"): Python script runs without paying for interpreter start-up.

Why: a ``.py`` run through the exec path costs 70-90 ms before the script does anything --
the trampoline's own ``python -I -S``, then the script interpreter's ``site`` (~27 ms), then
``from thot import ThotProject`` (~11 ms).  Analyses are often small, and a ``thot run`` over
a big project runs hundreds of them.  The fork server is one long-lived interpreter per
``thot run`` (and per daemon) that has done all of that once; each run is a ``fork`` of it
that then turns itself into ``python /abs/script.py``.  Measured on a 2-vCPU VM, a trivial
script takes ~11 ms through ``run_sync`` forked against ~50-60 ms exec'd: ~3-4 ms until the
script's first line, the rest is the interpreter shutdown every run pays anyway.

One module per process it runs in: ``client`` (in the runner's or the daemon's process:
``ForkServer``, ``ForkedProcess``), ``server`` (the server process, started as ``python -m
thotd.executor.forkserver.server FD``), ``child`` (a fork of the server becoming the run),
and ``protocol`` (the messages both ends exchange).  Stdlib only; may import the rest of
``thotd.executor``.
"""
