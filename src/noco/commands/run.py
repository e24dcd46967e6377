"""`noco run` (not yet implemented)."""


def register(sub) -> None:
    pass
