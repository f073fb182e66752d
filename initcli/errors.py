"""The one exception type the domain raises for bad input."""

from __future__ import annotations


class InitcliError(ValueError):
    """Bad input to initcli, with the name of the parameter at fault.

    `param` is the Python API's keyword (``negative_slope``); the CLI shows it as the
    option (``--negative-slope``). The message states what is accepted.
    """

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message

    def __reduce__(self):
        # pickled across process boundaries (compare/train workers): the default reduce would
        # call __init__ with the message alone and fail in the parent's result thread
        return (type(self), (self.param, self.message))

    @property
    def option(self) -> str | None:
        return None if self.param is None else "--" + self.param.replace("_", "-")

    def __str__(self) -> str:
        return self.message if self.option is None else f"{self.option}: {self.message}"


def suggest(name: str, known: list[str]) -> str:
    """' (did you mean 'x'?)' for the nearest known name, or ''."""
    import difflib

    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
