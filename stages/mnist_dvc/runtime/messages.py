"""What a stage tells its user while it runs: progress lines on stderr."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    """A progress line on stderr, with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
