"""Exceptions. Only *our own* misuse raises; a misbehaving peer never does (see connection.py)."""

from __future__ import annotations

__all__ = ["LocalProtocolError", "MalformedBody"]


class LocalProtocolError(Exception):
    """This side tried something the protocol forbids: a message its role may not send, or a
    field that does not fit its wire type. A bug in the caller, so it is raised, like h11's."""


class MalformedBody(ValueError):
    """A received body does not match its message layout. Internal: the Connection turns it into
    a counted ProtocolErrorEvent and never lets it escape."""
