"""Runs and records: which runs exist, which are stale and why, what runs next, what a
finished run recorded; the state store and the index snapshot; the one-shot ``thot run``.

May import: ``executor``, ``project`` and the leaf modules.
"""
