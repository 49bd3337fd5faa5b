"""The TUF repository `carryon publish` writes: static files any HTTP server, CDN or object store can serve.

    repo = RepoConfig(Path(".carryon/repository"), Path(".carryon/repo-keys"), Expiries(365, 90, 7, 24))
    init_repository(repo); publish_bundle(repo, Path("7.tar")); refresh(repo)

Metadata is written with python-tuf's Metadata API, consistent snapshots on, one ed25519 key per role
kept outside the repository. Every change writes new files first and ``metadata/timestamp.json`` last,
so readers see the old state or the new one, never a mix. ``upload_repository`` copies the repository to an
S3-compatible bucket in the same order (``timestamp.json`` last).
"""

from export.publish._commit import RepoConfig
from export.publish._errors import BundleRefusedError, PublishError, RepoNotInitializedError, RoleKeyError
from export.publish._keys import ROLES
from export.publish._s3 import ObjectStoreError, parse_bucket_url, upload_repository
from export.publish._setup import init_repository, rotate_root
from export.publish._status import newest_bundle_version, repository_status
from export.publish._store import Expiries
from export.publish._targets import REVOCATIONS, publish_bundle, refresh, revoke_creator_key

__all__ = [
    "REVOCATIONS", "ROLES", "BundleRefusedError", "Expiries", "ObjectStoreError", "PublishError", "RepoConfig",
    "RepoNotInitializedError", "RoleKeyError", "init_repository", "newest_bundle_version", "parse_bucket_url",
    "publish_bundle", "refresh", "repository_status", "revoke_creator_key", "rotate_root", "upload_repository",
]
