"""Errors of the edge client (pull, trust, unpack); each message names the thing, what was wrong and the fix."""

from __future__ import annotations

from features.errors import CarryonError


class EdgeError(CarryonError):
    """Base of the edge client's refusals."""


class TrustError(EdgeError):
    """The node's trust (TUF root, trust.json, a key file) is missing or invalid."""


class ClockError(EdgeError):
    """The device clock cannot be used to judge expiry."""


class RepositoryUnreachable(EdgeError):
    """No mirror answered: the node is offline or every mirror is down."""


class PullRefused(EdgeError):
    """The repository or the bundle failed a check; nothing was installed."""


class UnpackError(PullRefused):
    """A bundle tar holds a member that must not be extracted."""
