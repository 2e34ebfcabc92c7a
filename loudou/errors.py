"""Errors a user can act on: each carries one line that names what is wrong."""


class LoudouError(Exception):
    """An error reported to the user as one line (or one line per mistake), exit code 1."""


class ConfigError(LoudouError):
    pass


class SourceError(LoudouError):
    """The CRM database could not be read. `transient` errors are worth retrying."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class WarehouseError(LoudouError):
    """The warehouse could not be written or read; `transient` when another run holds it."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient
