"""Byte counts as people write and read them: ``200MB``, ``1.5GiB``, ``1.2 MB``.

A leaf module (nothing of ctxpack's but the errors), so that commands
answering from a running watcher can format sizes without loading the
walker or the audit.
"""

from __future__ import annotations

import re

from ctxpack.errors import InputError

__all__ = ["format_size", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_size(text: str) -> int:
    """``200MB`` → 200×10⁶, ``1.5GiB`` → 1.5×2³⁰; units are case-insensitive.

    Bare ``k``/``M``/``G`` are refused: they mean 10³ to some tools and 2¹⁰
    to others (``docker --memory``), so the user must say which.
    """
    m = _SIZE.match(text)
    if not m:
        raise InputError(f"invalid size {text!r}: use a number with kB, MB, GB (10^3...) or KiB, MiB, GiB (2^10...)")
    number, unit = m.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise InputError(f"invalid size unit {unit!r} in {text!r}: use kB, MB, GB (10^3...) or KiB, MiB, GiB (2^10...)")
    return int(float(number) * factor)


def format_size(n: int) -> str:
    """Decimal units, as docker prints context sizes (``Sending build context ... 1.2MB``)."""
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"
