"""`noco synth` (not yet implemented)."""


def register(sub) -> None:
    pass
