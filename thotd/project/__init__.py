"""What a project is: object files, their pydantic models, the in-memory index (read folder
by folder, queried) and search.

May import: the leaf modules beside ``thotd/__init__.py`` (``paths``, ``slotted``,
``digest``, ``fingerprint``). Imported by every room above and by the ``thot`` script API.
"""
