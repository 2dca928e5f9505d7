"""User-facing errors. The CLI turns these into a one-line message and exit code 2."""


class RarebenchError(Exception):
    """Base class: a problem the user can fix (bad input, missing weights, ...)."""

    exit_code = 2


class UnknownModelError(RarebenchError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown model"


class MissingWeightsError(RarebenchError):
    pass


class MissingPackageError(RarebenchError):
    pass


class BadInputError(RarebenchError, ValueError):
    pass


class CorruptCacheError(RarebenchError):
    pass
