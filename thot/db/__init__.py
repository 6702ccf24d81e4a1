"""``thot.db``: the original Thot's database modules (``thot.db.local``), kept for imports."""
