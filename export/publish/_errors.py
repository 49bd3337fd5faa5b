"""Why `carryon publish` and `carryon repo` refuse: one type per cause, each message naming the fix."""

from __future__ import annotations

from features.errors import CarryonError


class PublishError(CarryonError):
    """The TUF repository cannot be written or read as asked."""


class RepoNotInitializedError(PublishError):
    """The repository directory holds no TUF metadata yet."""


class BundleRefusedError(PublishError):
    """The bundle may not be published: unreadable, not the champion, or not newer."""


class RoleKeyError(PublishError):
    """A repository role key file is missing, unreadable, too open, or not the key root names."""
