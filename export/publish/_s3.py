"""Copy the local TUF repository to an S3-compatible bucket in an order readers never notice.

    upload_repository(Path(".carryon/repository"), "s3://bundles/carryon")

The local directory stays the source of truth: keys and signing never leave it. Objects go up as target
files, then versioned targets/snapshot metadata, then versioned roots, then ``root.json``, and
``timestamp.json`` last. Until the new timestamp lands nothing in the bucket refers to the new objects, so a
store that becomes unreachable midway leaves the previous state published and whole. Nothing is ever
deleted. An object already there with the same content is skipped. A published version never changes: the
upload refuses a bucket whose versioned metadata or timestamp differs from or is newer than the local one.
The endpoint comes from ``CARRYON_S3_ENDPOINT_URL`` or boto3's own ``AWS_ENDPOINT_URL``; credentials come
from the usual AWS variables and files.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.exceptions import RepositoryError
from tuf.api.serialization import DeserializationError

from export.publish import _store
from export.publish._errors import PublishError
from export.publish._tuf import Metadata, Snapshot, Targets, Timestamp

ENDPOINT_ENV = "CARRYON_S3_ENDPOINT_URL"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_VERSIONED = re.compile(r"^(\d+)\.([a-z]+)\.json$")
# Mutable names are revalidated on every read (a CDN may keep them a minute at most); the rest never change.
_MUTABLE_CACHE = "no-cache, max-age=0"
_IMMUTABLE_CACHE = "public, max-age=31536000, immutable"


class ObjectStoreError(PublishError):
    """The bucket cannot be reached, read or written as asked, or holds another repository's history."""


@dataclass(frozen=True)
class BucketUrl:
    """``s3://bucket/prefix``: where the repository's ``metadata/`` and ``targets/`` go."""

    bucket: str
    prefix: str  # no leading or trailing slash; "" for the bucket's top level

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def parse_bucket_url(url: str) -> BucketUrl:
    """Parse ``s3://bucket[/prefix]``; refuse what S3 would refuse or a reader could not address."""
    if not url.startswith("s3://"):
        raise ObjectStoreError(f"upload URL {url!r} must look like s3://BUCKET/PREFIX")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ObjectStoreError(f"upload URL {url!r}: bucket name {bucket!r} must be 3-63 lowercase letters, digits, "
                               "'.' or '-', starting and ending with a letter or digit")
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    bad = [p for p in parts if p in ("", ".", "..") or not p.isprintable() or "\\" in p]
    if bad:
        raise ObjectStoreError(f"upload URL {url!r}: prefix segment {bad[0]!r} is not allowed (empty, '.', '..', "
                               "backslash or control characters)")
    return BucketUrl(bucket, prefix)


@dataclass(frozen=True)
class _Item:
    relative: str  # "metadata/3.snapshot.json", "targets/maya/<sha256>.7.tar"
    path: Path
    mutable: bool


@dataclass(frozen=True)
class _Remote:
    size: int
    etag: str


def _read_metadata(data: bytes, source: str, kind: type[Timestamp] | type[Snapshot] | type[Targets]) -> Metadata:
    try:
        md = Metadata.from_bytes(data)
    except (DeserializationError, RepositoryError, ValueError) as e:
        raise PublishError(f"{source}: not valid TUF metadata ({e}); restore the repository from a backup") from e
    if not isinstance(md.signed, kind):
        raise PublishError(f"{source}: expected {kind.type} metadata, got {md.signed.type}")
    return md


def _local_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PublishError(f"{path}: cannot read the repository file ({e.strerror}); the local repository is "
                           "damaged, restore it from a backup") from e


def _plan(repo_dir: Path, timestamp: Metadata[Timestamp]) -> list[_Item]:
    """Every object of the published state and its history, in upload order (timestamp.json not included).

    Versioned targets/snapshot files newer than the ones the timestamp publishes are leftovers of a
    failed local publish (the next publish rewrites them), so they stay home.
    """
    folder = _store.metadata_dir(repo_dir)
    snapshot_version = timestamp.signed.snapshot_meta.version
    snapshot_path = folder / f"{snapshot_version}.snapshot.json"
    snapshot = _read_metadata(_local_bytes(snapshot_path), str(snapshot_path), Snapshot)
    targets_meta = snapshot.signed.meta.get("targets.json")
    if targets_meta is None:
        raise PublishError(f"{snapshot_path}: lists no targets.json; restore the repository from a backup")
    targets_path = folder / f"{targets_meta.version}.targets.json"
    targets = _read_metadata(_local_bytes(targets_path), str(targets_path), Targets)
    for name, info in targets.signed.targets.items():
        path = _store.target_file_path(repo_dir, name, info.hashes["sha256"])
        if not path.is_file():
            raise PublishError(f"{path}: target {name} of the published state is missing; restore the repository "
                               "from a backup before uploading it")
    newest = {"snapshot": snapshot_version, "targets": targets_meta.version,
              "root": _store.newest_root_version(repo_dir)}
    versioned: list[tuple[int, int, str, Path]] = []
    for path in _files(folder):
        match = _VERSIONED.match(path.name)
        if match is None:
            continue
        version, role = int(match.group(1)), match.group(2)
        if role in newest and version <= newest[role]:
            versioned.append((role == "root", version, path.name, path))
    items = [_Item(path.relative_to(repo_dir).as_posix(), path, False) for path in _files(_store.targets_dir(repo_dir))]
    items.sort(key=lambda item: item.relative)
    items += [_Item(f"metadata/{name}", path, False) for _, _, name, path in sorted(versioned)]
    items.append(_Item("metadata/root.json", folder / "root.json", True))
    return items


def _files(folder: Path) -> Iterator[Path]:
    """Regular files under ``folder``; dot files (temp files of atomic writes) and links are not published."""
    if not folder.is_dir():
        return
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and not any(p.startswith(".") for p in path.relative_to(
                folder).parts):
            yield path


def _boto() -> tuple[Any, Any]:
    try:
        return importlib.import_module("boto3"), importlib.import_module("botocore.config")
    except ModuleNotFoundError as e:
        raise ObjectStoreError(f"uploading to s3:// needs boto3 (missing module {e.name!r}); install it with: "
                               "pip install 'carryon[scale]'") from e


def make_client() -> Any:
    """An S3 client: endpoint from ``CARRYON_S3_ENDPOINT_URL`` (else boto3's ``AWS_ENDPOINT_URL``), short retries."""
    boto3, config = _boto()
    endpoint = os.environ.get(ENDPOINT_ENV) or None
    settings = config.Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    # A session of its own: boto3's default session would keep the credentials it found first.
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=settings)


def _describe(error: Exception, client: Any) -> str:
    """One clause naming what went wrong with the store and the fix."""
    exceptions = importlib.import_module("botocore.exceptions")
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "the default AWS endpoint")
    if isinstance(error, exceptions.NoCredentialsError | exceptions.PartialCredentialsError):
        return (f"no usable credentials for {endpoint} ({error}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE)")
    if isinstance(error, exceptions.EndpointConnectionError | exceptions.ConnectTimeoutError
                  | exceptions.ReadTimeoutError | exceptions.ConnectionClosedError):
        return f"the object store at {endpoint} is unreachable ({error})"
    if isinstance(error, exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "?")
        if code in ("NoSuchBucket", "404"):
            return f"the bucket does not exist at {endpoint}; create it first"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access denied by {endpoint} ({code}); check the credentials and the bucket policy"
        return f"{endpoint} refused the request ({code}: {error})"
    return f"{type(error).__name__}: {error}"


def _store_errors() -> tuple[type[Exception], ...]:
    exceptions = importlib.import_module("botocore.exceptions")
    return exceptions.BotoCoreError, exceptions.ClientError


def _listing(client: Any, url: BucketUrl) -> dict[str, _Remote]:
    """Objects under the prefix, by path relative to it."""
    found: dict[str, _Remote] = {}
    start = url.key("")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=start):
        for obj in page.get("Contents", []):
            found[obj["Key"][len(start):]] = _Remote(int(obj["Size"]), str(obj.get("ETag", "")).strip('"'))
    return found


def _same(client: Any, url: BucketUrl, relative: str, remote: _Remote | None, data: bytes) -> bool:
    """Whether the bucket already holds ``data`` there: size, then MD5 ETag (single-part) or our sha256 tag."""
    if remote is None or remote.size != len(data):
        return False
    if remote.etag == hashlib.md5(data, usedforsecurity=False).hexdigest():
        return True
    head = client.head_object(Bucket=url.bucket, Key=url.key(relative))
    return bool(head.get("Metadata", {}).get("sha256") == hashlib.sha256(data).hexdigest())


def _check_history(client: Any, url: BucketUrl, remote: dict[str, _Remote], local_timestamp: Metadata[Timestamp],
                   timestamp_bytes: bytes) -> int | None:
    """Refuse a bucket ahead of or diverged from the local repository; return its timestamp version (None: empty)."""
    if "metadata/timestamp.json" not in remote:
        return None
    key = url.key("metadata/timestamp.json")
    body = client.get_object(Bucket=url.bucket, Key=key)["Body"].read()
    theirs = _read_metadata(body, f"{url}/metadata/timestamp.json", Timestamp)
    ours = local_timestamp.signed.version
    if theirs.signed.version > ours or (theirs.signed.version == ours and body != timestamp_bytes):
        raise ObjectStoreError(
            f"{url}: the bucket publishes timestamp version {theirs.signed.version}, the local repository version "
            f"{ours}{' with other content' if theirs.signed.version == ours else ''}; it was published from another "
            "copy of the repository: upload from that copy, or choose another prefix")
    return int(theirs.signed.version)


def _put(client: Any, url: BucketUrl, relative: str, data: bytes, mutable: bool) -> None:
    kind = "application/json" if relative.endswith(".json") else "application/x-tar" if relative.endswith(
        ".tar") else "application/octet-stream"
    client.put_object(Bucket=url.bucket, Key=url.key(relative), Body=data, ContentType=kind,
                      CacheControl=_MUTABLE_CACHE if mutable else _IMMUTABLE_CACHE,
                      Metadata={"sha256": hashlib.sha256(data).hexdigest()})


def upload_repository(repo_dir: Path, url: str, client: Any | None = None,
                      on_put: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Upload what the bucket lacks of the published state, ``timestamp.json`` last (see the module docstring).

    ``client`` is a boto3 S3 client (default: :func:`make_client`); ``on_put`` hears each relative path
    once its upload has succeeded.
    """
    target = parse_bucket_url(url)
    if not _store.is_initialized(repo_dir):
        raise _store.not_initialized(repo_dir)
    # The timestamp is read first: everything it refers to was already on disk when it was written.
    timestamp_path = _store.metadata_dir(repo_dir) / "timestamp.json"
    timestamp_bytes = _local_bytes(timestamp_path)
    timestamp = _read_metadata(timestamp_bytes, str(timestamp_path), Timestamp)
    items = _plan(repo_dir, timestamp)
    client = client if client is not None else make_client()
    errors = _store_errors()
    uploaded: list[str] = []
    sent_bytes = 0
    before: int | None = None
    looked = False
    try:
        client.head_bucket(Bucket=target.bucket)
        remote = _listing(client, target)
        before = _check_history(client, target, remote, timestamp, timestamp_bytes)
        looked = True
        todo: list[tuple[_Item, bytes]] = []
        for item in items:
            data = _local_bytes(item.path)
            if _same(client, target, item.relative, remote.get(item.relative), data):
                continue
            if item.relative.startswith("metadata/") and not item.mutable and item.relative in remote:
                raise ObjectStoreError(
                    f"{target}/{item.relative}: the bucket holds different content for this published version; "
                    "the bucket holds another repository's history: choose another prefix, or upload from the "
                    "repository that published there")
            todo.append((item, data))
        if not _same(client, target, "metadata/timestamp.json", remote.get("metadata/timestamp.json"),
                     timestamp_bytes):
            todo.append((_Item("metadata/timestamp.json", timestamp_path, True), timestamp_bytes))
        for item, data in todo:
            _put(client, target, item.relative, data, item.mutable)
            uploaded.append(item.relative)
            sent_bytes += len(data)
            if on_put is not None:
                on_put(item.relative)
    except errors as e:
        state = ("the bucket is unchanged" if not uploaded else
                 f"{len(uploaded)} object(s) went up before the failure but timestamp.json did not, so readers still "
                 "see the previous state")
        published = ("" if not looked else f" (it publishes timestamp version {before})" if before is not None
                     else " (it publishes nothing yet)")
        raise ObjectStoreError(f"{target}: upload stopped: {_describe(e, client)}; {state}{published}; "
                               f"run `carryon repo sync {target}` again once the store answers") from e
    return {"url": str(target), "endpoint": getattr(client.meta, "endpoint_url", None), "uploaded": uploaded,
            "uploaded_bytes": sent_bytes, "skipped": len(items) + 1 - len(uploaded),
            "timestamp_version": int(timestamp.signed.version), "bucket_timestamp_version_before": before}
