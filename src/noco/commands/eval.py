"""`noco eval` (not yet implemented)."""


def register(sub) -> None:
    pass
