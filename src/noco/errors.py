"""User-facing errors. The CLI prints them as one clear message and exits with code 2."""

from __future__ import annotations


class NocoError(Exception):
    """An error caused by the user's input (file, flag, config). Never a bug."""


class DataError(NocoError):
    """One or more problems with a dataset, label or prediction file.

    ``problems`` lists every problem found, each naming file, video and field.
    """

    def __init__(self, problems: list[str] | str, header: str = "invalid input"):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        shown = self.problems[:50]
        more = len(self.problems) - len(shown)
        msg = header + (":" if self.problems else "")
        if len(self.problems) == 1:
            msg = f"{header}: {self.problems[0]}"
        else:
            msg += "".join(f"\n  - {p}" for p in shown)
            if more:
                msg += f"\n  ... and {more} more"
        super().__init__(msg)


class OutputError(NocoError, OSError):
    """An output file could not be written (a directory in its place, no permission, disk full).

    Also an ``OSError``, so code that catches ``OSError`` around a write keeps working.
    """
