"""The two kinds of failure the platform reports, so a run retries only what waiting can fix."""


class PlatformError(Exception):
    """A failure worded for the person running the platform (file, column or row named)."""

    retryable = False

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class InputError(PlatformError):
    """Bad input (a file, a mapping, a setting): fails once, never retried."""


class TransientError(PlatformError):
    """A fault that may pass (a held lock, an unreachable server): worth a retry."""

    retryable = True
