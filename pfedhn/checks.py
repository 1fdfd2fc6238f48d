"""Tests of config values, shared by the generic keys (``pfedhn.config``) and each method's.

``Checks`` maps a dotted key to (a test of its value, what the value must be); a failed
test becomes a ``ConfigError`` naming the key (``pfedhn.validation``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Checks = dict[str, tuple[Callable[[Any], bool], str]]


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def non_negative(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def boolean(value: Any) -> bool:
    return isinstance(value, bool)
