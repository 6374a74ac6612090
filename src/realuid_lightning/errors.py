"""The one exception type for user mistakes: the CLI prints its message as one line and exits with 2."""


class ConfigError(ValueError):
    """A user-supplied value is invalid; the message names the value and what is allowed."""
