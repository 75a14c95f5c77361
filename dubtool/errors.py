"""Errors a user can cause. The CLI prints their message as one red line and exits non-zero."""


class DubtoolError(Exception):
    """Base class: the message says what went wrong and what to do about it."""

    exit_code = 2


class InputError(DubtoolError):
    """A file given on the command line is missing, unreadable, corrupt or out of range."""


class NoFaceError(InputError):
    """The video holds no trackable face (or too little of one)."""


class SilenceError(InputError):
    """The audio holds no speech."""


class ModelError(DubtoolError):
    """A checkpoint or model bundle is missing, corrupt or of the wrong version."""


class LLMError(DubtoolError):
    """The language-model endpoint failed, timed out or returned unusable output."""


class DependencyError(DubtoolError):
    """A system program or library dubtool needs is not installed."""
