"""Errors a user can cause and fix: the entry points print their message alone, with a non-zero exit code."""


class UserError(Exception):
    """A problem the user can fix (bad value, missing file, unreachable server): reported as one `error:` line."""


class ConfigError(UserError):
    """A config value out of its allowed range, naming the key."""


class NonFiniteLoss(UserError):
    """Training diverged; the message names the epoch and batch."""
