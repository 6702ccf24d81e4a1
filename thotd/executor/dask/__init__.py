"""The ``dask`` executor: runs on a Dask ``distributed`` cluster (a scheduler address, or a
``dask-jobqueue`` cluster on Slurm, PBS, SGE, LSF...).

:mod:`~thotd.executor.dask.client` is the daemon's side (the connection, submitting,
results, log streaming, the shared-filesystem probe); :mod:`~thotd.executor.dask.task` is
what runs on a worker (importable there from the installed ``thotd``). Imported only when
the executor is chosen (:func:`thotd.executor.choose.load`).
"""
