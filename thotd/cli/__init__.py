"""The commands: ``thot`` (one-shot), ``thotd`` (the service) and ``thotctl`` (ask it).

May import every room. Parsing and rendering only; what a command does lives below.
"""
