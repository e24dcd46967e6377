"""`noco wtal` (not yet implemented)."""


def register(sub) -> None:
    pass
