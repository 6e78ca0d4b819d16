"""Errors the embedded stack raises; each message says what to do about it."""

from __future__ import annotations


class StackError(RuntimeError):
    """A service could not be started, found or stopped; the message names the fix."""
