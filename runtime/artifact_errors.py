"""The one error type of the ``.pnn`` artifact format (shared by the parser, its limits and signing)."""
from __future__ import annotations

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import ArtifactFailure


class ArtifactError(ArtifactFailure, ValueError):
    """A PNN artifact that cannot be used. ``code`` is its :class:`ErrorCode` (a refused deploy replies with it);
    ``where`` names the artifact (a path or an id) when the raiser knows it."""

    def __init__(self, code: ErrorCode | str, message: str, where: str = ""):
        self.code = ErrorCode(code)
        self.message = message
        self.where = where
        super().__init__(f"{self.code}: {message}")

    def __reduce__(self):
        return (self.__class__, (self.code, self.message, self.where))
