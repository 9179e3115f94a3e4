"""What a stage tells its user: progress lines, and mistakes in params, data, model files or the environment."""

from __future__ import annotations

import sys
import time


class UserError(Exception):
    """A mistake in params, data, model files or the environment: reported as one line, no traceback."""


def log(message: str) -> None:
    """A progress line on stderr, with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
