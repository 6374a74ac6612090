"""The one exception type for user mistakes: the CLI prints its message as one line and exits with 2."""


class ConfigError(ValueError):
    """A user-supplied value is invalid; the message names the value and what is allowed."""


class DivergenceError(ConfigError):
    """Training stopped on non-finite losses, gradients or weights; the CLI prints it as one line too."""
