"""The errors a user can fix: each carries one line saying what to change."""


class PFedHNError(Exception):
    """Base of the errors that ``pfedhn.main`` reports as one line, without a traceback."""


class ConfigError(PFedHNError):
    """A config value is invalid; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"config error: {key}: {message}")


class DataError(PFedHNError):
    """The dataset files are missing or unreadable; the message names the files."""
