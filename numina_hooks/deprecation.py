"""Renamed public names kept working for a while: old keywords and old attribute reads.

A class that renames a keyword keeps a map ``{old: new}``; :func:`rename_keywords` turns the
old keywords of a call into the new ones (one ``DeprecationWarning`` per old name, naming the
new one; the value is unchanged) and :func:`renamed_attribute` makes ``obj.old`` read
``obj.new`` with the same warning. The warning points at the first caller outside this
package and outside ``dataclasses`` (so ``dataclasses.replace(cfg, tau=...)`` and
``NuminaConfig(tau=...)`` point at the user's line).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Mapping

__all__ = ["rename_keywords", "renamed_attribute", "warn_deprecated", "warn_renamed"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_SKIPPED_FILES = ("dataclasses.py",)


def _user_stacklevel() -> int:
    """``stacklevel`` for ``warnings.warn`` called from this module that names the first frame
    outside numina_hooks and dataclasses."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_PACKAGE_DIR) and os.path.basename(path) not in _SKIPPED_FILES:
            return level
        frame, level = frame.f_back, level + 1
    return level


def warn_deprecated(message: str) -> None:
    """A ``DeprecationWarning`` with ``message``, attributed to the user's line."""
    warnings.warn(message, DeprecationWarning, stacklevel=_user_stacklevel())


def warn_renamed(owner: str, old: str, new: str) -> None:
    """A ``DeprecationWarning``: ``owner``'s ``old`` is now called ``new``."""
    warn_deprecated(f"{owner}: {old!r} is deprecated, use {new!r} instead (same meaning and value); "
                    f"{old!r} will be removed in a later release")


def rename_keywords(owner: str, renames: Mapping[str, str], kwargs: dict,
                    old_wins: bool = False) -> tuple[dict, dict]:
    """``kwargs`` with every old keyword of ``renames`` (``{old: new}``) given its new name.

    Returns ``(kwargs, used)``, ``used`` mapping each new name that came from an old one to
    that old name (so errors can name what the user wrote). Giving an old name and its new
    name with different values is a ``TypeError`` unless ``old_wins`` (the caller knows the
    new name's value is a copy, as in ``dataclasses.replace``)."""
    out, used = dict(kwargs), {}
    for old, new in renames.items():
        if old not in out:
            continue
        value = out.pop(old)
        warn_renamed(owner, old, new)
        if new in out and not old_wins and out[new] != value:
            raise TypeError(f"{owner}: got {old}={value!r} and {new}={out[new]!r}; {old!r} is the deprecated "
                            f"name of {new!r}: give {new!r} alone")
        out[new] = value
        used[new] = old
    return out, used


def renamed_attribute(owner: str, old: str, new: str) -> property:
    """A property ``old`` that warns and reads (or sets) the attribute ``new``."""

    def read(self):
        warn_renamed(owner, old, new)
        return getattr(self, new)

    def write(self, value):
        warn_renamed(owner, old, new)
        setattr(self, new, value)

    return property(read, write, doc=f"Deprecated name of ``{new}`` (using it warns).")
