"""The memory a stage may hold: refuse, before any work, params that would need more than the machine has.

The schema bounds each param alone; together they can still ask for too much (36 HOG orientations in 2x2-pixel cells
and 7x7-cell blocks make 112,896 features an image, 1.8 GB for the sample's 4,000 digits before any fit). A stage
estimates what it will hold from its params and the data's size, and refuses in one line what exceeds the limit:
`MNIST_DVC_MEMORY_LIMIT` (like `8G` or `500M`), else 80% of this machine's memory. Where the work runs, like the
worker count: never a param.
"""

from __future__ import annotations

import re

import psutil

from mnist_dvc.study.errors import UserError

LIMIT_VARIABLE = "MNIST_DVC_MEMORY_LIMIT"
SHARE_OF_MEMORY = 0.8
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
GB = 2**30


def memory_limit(setting: str | None) -> int:
    """Bytes a stage may hold: `setting` (a number of bytes, or with K, M, G or T), else 80% of the memory."""
    if setting is None or not setting.strip():
        return int(SHARE_OF_MEMORY * psutil.virtual_memory().total)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", setting, re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"{LIMIT_VARIABLE}={setting!r}: expected an amount of memory such as 8G, 500M or 2.5G")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def check_memory(needs: dict[str, int], limit: int) -> None:
    """Refuse when the estimates of `needs` (what holds the memory, named by its params -> bytes) add up past
    `limit`; the message names the largest."""
    total = sum(needs.values())
    if total <= limit:
        return
    largest = sorted(needs.items(), key=lambda item: -item[1])[:3]
    named = "; ".join(f"{what}: {size / GB:.1f} GB" for what, size in largest)
    raise UserError(
        f"these params would need about {total / GB:.1f} GB, more than the {limit / GB:.1f} GB allowed ({named}): "
        f"choose smaller values, or set {LIMIT_VARIABLE} (e.g. {LIMIT_VARIABLE}=16G) to allow more"
    )
