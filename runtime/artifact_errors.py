"""The one error type of the ``.pnn`` artifact format (shared by the parser, its limits and signing)."""
from __future__ import annotations


class ArtifactError(ValueError):
    """A PNN artifact that cannot be used. ``code`` is a short machine-readable reason."""

    def __init__(self, code: str, message: str):
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")

    def __reduce__(self):
        return (self.__class__, (self.code, self.message))
