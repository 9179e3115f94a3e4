"""The user's mistakes: in params, data, model files or the environment."""


class UserError(Exception):
    """A mistake in params, data, model files or the environment: reported as one line, no traceback."""
