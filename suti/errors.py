"""Typed exceptions. Every user-facing failure is one of these, with a message that names the problem."""


class SutiError(Exception):
    """Base class for errors that the CLI reports as one line (no traceback)."""


class ConfigError(SutiError, ValueError):
    """A configuration, preset or argument value is invalid."""


class InputError(SutiError, ValueError):
    """User input (images, prompts, numbers, paths) is invalid."""


class ModelLoadError(SutiError):
    """A model directory or checkpoint is missing, corrupt or does not match its config."""
