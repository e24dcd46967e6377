"""`noco detector` (not yet implemented)."""


def register(sub) -> None:
    pass
