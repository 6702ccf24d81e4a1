"""``blake2b`` without ``hashlib``: importing hashlib loads OpenSSL's ``_hashlib`` (~3-4 ms of
every ``thot`` start-up), and blake2 is built into CPython anyway."""

try:
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python built without its own blake2
    from hashlib import blake2b

__all__ = ["blake2b"]
