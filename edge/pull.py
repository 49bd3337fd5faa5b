"""``carryon edge pull``: refresh TUF metadata, pick the creator's newest bundle, verify it, install it atomically.

Steps: clock sanity -> TUF refresh over the mirrors (rollback, freeze, mix-and-match protection) -> the
repository's revocation list merged into ``trust.json`` -> newest ``<creator>/<version>.tar`` from the trusted
targets metadata, refused unless newer than the installed one -> download (length and hashes from TUF, resumed
with HTTP Range) -> safe unpack -> model signature against the trusted, unrevoked creator keys -> golden vectors
in a child process -> atomic switch of ``current/<creator>`` -> ``state.json``. Any failure leaves the installed
bundle untouched and raises an ``EdgeError`` whose message is one line.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Targets  # type: ignore[attr-defined]
from tuf.ngclient.config import UpdaterConfig

from edge._install import install_bundle, prune_versions, run_golden_child
from edge._unpack import UnpackLimits, safe_unpack
from edge.client_errors import ClockError, EdgeError, PullRefused, RepositoryUnreachable, TrustError
from edge.fetch import FetchSettings, MirrorFetcher
from edge.home import EdgeHome, check_creator, iso
from edge.status import stale_note
from edge.trust import merge_revocations, trusted_keys_for
from edge.tuf_store import SafeUpdater, open_updater
from features.errors import CarryonError

__all__ = ["CLOCK_FLOOR", "PullOptions", "pull"]

# A clock before this is a device that has not synced its time (no RTC): it cannot judge expiry either way.
CLOCK_FLOOR = datetime(2024, 1, 1, tzinfo=UTC)
REVOCATIONS_TARGET = "revocations.json"

Verify = Callable[[Path, dict[str, bytes], set[str]], dict[str, Any]]
Golden = Callable[[Path], dict[str, Any]]


@dataclass(frozen=True)
class PullOptions:
    """Where to pull from and the limits of a pull."""

    repo: str
    mirrors: tuple[str, ...] = ()
    fetch: FetchSettings = field(default_factory=FetchSettings)
    unpack: UnpackLimits = field(default_factory=UnpackLimits)
    golden_timeout_s: float = 120.0
    metadata: UpdaterConfig = field(default_factory=lambda: UpdaterConfig(
        root_max_length=256_000, timestamp_max_length=16_384, snapshot_max_length=1_000_000,
        targets_max_length=4_000_000))

    @property
    def bases(self) -> list[str]:
        return [self.repo.rstrip("/"), *(m.rstrip("/") for m in self.mirrors)]


def _default_verify(now: datetime) -> Verify:
    """edge.verify.verify_bundle, imported only when a pull reaches it; the (sane) clock refuses expired bundles."""

    def verify(bundle: Path, trusted: dict[str, bytes], revoked: set[str]) -> dict[str, Any]:
        from edge.verify import verify_bundle

        return verify_bundle(bundle, trusted, revoked, now=now)

    return verify


def pull(home: EdgeHome, creator: str, options: PullOptions, *, now: datetime | None = None,
         verify: Verify | None = None, golden: Golden | None = None) -> dict[str, Any]:
    """Install the newest trusted bundle of ``creator``; return what happened (see the module docstring)."""
    check_creator(creator)
    home.require_init()
    now = now or datetime.now(UTC)
    with _lock(home):
        try:
            if now < CLOCK_FLOOR:
                raise ClockError(f"the device clock reads {iso(now)}, before {CLOCK_FLOOR.date()}: it is plainly "
                                 "unset, so metadata expiry cannot be judged; set the clock (NTP) and pull again")
            return _pull(home, creator, options, now, verify or _default_verify(now), verify is None,
                         golden or (lambda d: run_golden_child(d, options.golden_timeout_s)))
        except EdgeError as e:
            message = f"{e}; {stale_note(home, creator, now)}"
            home.update_state(creator, version=home.installed_version(creator), last_error=message)
            raise type(e)(message) from None


@contextlib.contextmanager
def _lock(home: EdgeHome) -> Iterator[None]:
    home.root.mkdir(parents=True, exist_ok=True)
    with open(home.root / ".pull.lock", "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EdgeError(f"another pull is running on {home.root}; wait for it to finish") from None
        yield


def _pull(home: EdgeHome, creator: str, options: PullOptions, now: datetime, verify: Verify, import_verifier: bool,
          golden: Golden) -> dict[str, Any]:
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round((time.perf_counter() - clock) * 1000, 2)
        clock = time.perf_counter()

    installed = home.installed_version(creator)
    updater, fetcher = _refresh(home, options, now)
    lap("refresh_ms")
    revoked_new = _read_revocations(home, updater)
    version, name = _newest(home, creator)
    result: dict[str, Any] = {"creator": creator, "version": version, "previous_version": installed,
                              "target": name, "revoked_new": revoked_new, "warnings": []}
    if installed is not None and version < installed:
        raise PullRefused(f"the repository's newest bundle for {creator} is version {version}, older than the "
                          f"installed version {installed}: refusing a rollback (a creator's rollback is "
                          "published as a new version)")
    if installed is not None and version == installed:
        home.update_state(creator, version=installed, last_refresh_ok=iso(now), last_error=None)
        return {**result, "status": "up-to-date", "mirror_failures": fetcher.failures, "timings_ms": timings}
    tar_path = _download(home, updater, fetcher, name, len(options.bases))
    result.update(resumed_bytes=fetcher.resumed_bytes, mirror_failures=fetcher.failures)
    lap("download_ms")
    stage = home.bundles(creator) / f".tmp-{version}"
    try:
        shutil.rmtree(stage, ignore_errors=True)
        safe_unpack(tar_path, stage, options.unpack)
        lap("unpack_ms")
        if import_verifier:  # timed apart: the verifier's imports (onnx, model_signing) cost more than verifying
            importlib.import_module("edge.verify")
            lap("verify_import_ms")
        manifest = _verify(home, creator, version, stage, verify)
        lap("verify_ms")
        result["golden"] = golden(stage)
        lap("golden_ms")
        install_bundle(home, creator, version, stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    home.update_state(creator, version=version, installed_at=iso(now), last_refresh_ok=iso(now), last_error=None)
    lap("install_ms")
    tar_path.unlink(missing_ok=True)
    result["pruned"] = prune_versions(home, creator)
    result.update(status="installed", key_id=(manifest.get("signing") or {}).get("key_id"), timings_ms=timings,
                  personalization=manifest.get("personalization"))
    return result


def _refresh(home: EdgeHome, options: PullOptions, now: datetime) -> tuple[SafeUpdater, MirrorFetcher]:
    """Refresh with each mirror first in turn until one order yields metadata that verifies."""
    bases = options.bases
    refused: list[str] = []
    for i in range(len(bases)):
        order = bases[i:] + bases[:i]
        fetcher = MirrorFetcher(order, options.fetch, part_dir=home.downloads)
        updater = open_updater(home.tuf, order[0] + "/metadata/", fetcher, options.metadata, now,
                               target_dir=str(home.downloads), target_base_url=order[0] + "/targets/")
        try:
            updater.refresh()
            return updater, fetcher
        except tuf_errors.DownloadLengthMismatchError as e:
            refused.append(f"{order[0]}: metadata larger than allowed ({e})")
        except tuf_errors.DownloadHTTPError as e:
            refused.append(f"{order[0]}: {e}")
        except tuf_errors.DownloadError as e:
            raise RepositoryUnreachable(f"cannot reach the repository: {_cause(e)}") from None
        except tuf_errors.ExpiredMetadataError as e:
            refused.append(f"{order[0]}: stale metadata, refusing to trust it ({e}); the repository must "
                           "re-sign its timestamp (carryon publish --refresh)")
        except tuf_errors.RepositoryError as e:
            refused.append(f"{order[0]}: {type(e).__name__}: {e}")
        except OSError as e:
            raise EdgeError(f"cannot write trusted metadata in {home.tuf} ({e.strerror})") from None
    raise PullRefused("TUF refused the repository metadata: " + " | ".join(refused))


def _cause(error: BaseException) -> str:
    return str(error.__cause__ or error) if not str(error) else str(error)


def _read_revocations(home: EdgeHome, updater: SafeUpdater) -> list[str]:
    """Merge the repository's signed ``revocations.json`` (when it publishes one) into trust.json."""
    info = updater.get_targetinfo(REVOCATIONS_TARGET)
    if info is None:
        return []
    path = home.downloads / REVOCATIONS_TARGET
    try:
        updater.download_target(info, filepath=str(path))
        data = json.loads(path.read_text(encoding="utf-8"))
    except (tuf_errors.DownloadError, tuf_errors.RepositoryError, ValueError, OSError) as e:
        raise PullRefused(f"cannot read the repository's {REVOCATIONS_TARGET} ({e}); refusing to install without "
                          "its revocations") from None
    finally:
        path.unlink(missing_ok=True)
    entries = data.get("revoked") if isinstance(data, dict) else None
    # Entries are {"key_id", "reason", "revoked_at"} objects (export.publish); bare key id strings are accepted too.
    ids = [e.get("key_id") if isinstance(e, dict) else e for e in entries] if isinstance(entries, list) else None
    if ids is None or not all(isinstance(i, str) and i for i in ids):
        raise PullRefused(f"{REVOCATIONS_TARGET}: field 'revoked' must list key ids ({{'key_id': ...}} entries)")
    return merge_revocations(home, [str(i) for i in ids])


def _newest(home: EdgeHome, creator: str) -> tuple[int, str]:
    """Newest version of ``creator`` in the trusted top-level targets metadata (custom fields, exact name)."""
    try:
        targets = Metadata[Targets].from_file(str(home.tuf / "targets.json")).signed.targets
    except (OSError, ValueError, tuf_errors.RepositoryError) as e:
        raise EdgeError(f"cannot read trusted targets metadata in {home.tuf} ({e})") from None
    versions: dict[int, str] = {}
    for name, info in targets.items():
        custom = info.custom if isinstance(info.custom, dict) else {}
        version = custom.get("bundle_version")
        if custom.get("creator") != creator or not isinstance(version, int) or isinstance(version, bool):
            continue
        if version >= 1 and name == f"{creator}/{version}.tar":
            versions[version] = name
    if not versions:
        raise PullRefused(f"the repository lists no bundle for creator {creator!r} (targets named "
                          f"{creator}/<version>.tar with custom creator and bundle_version)")
    newest = max(versions)
    return newest, versions[newest]


def _download(home: EdgeHome, updater: SafeUpdater, fetcher: MirrorFetcher, name: str, mirrors: int) -> Path:
    """Download ``name`` into downloads/, resuming a .part; bytes that fail TUF's checks try the next mirror."""
    info = updater.get_targetinfo(name)
    if info is None:
        raise PullRefused(f"target {name} vanished from the trusted metadata")
    tar_path = home.downloads / (name.replace("/", "-"))
    problems: list[str] = []
    for _ in range(mirrors + 1):  # +1: a resumed .part that turns out corrupt gets one clean retry
        try:
            updater.download_target(info, filepath=str(tar_path))
        except (tuf_errors.LengthOrHashMismatchError, tuf_errors.DownloadLengthMismatchError) as e:
            problems.append(str(e))
            fetcher.discard_part()
            fetcher.rotate()
            continue
        except tuf_errors.DownloadHTTPError as e:
            raise PullRefused(f"target {name} is missing on every mirror ({e})") from None
        except tuf_errors.DownloadError as e:
            raise RepositoryUnreachable(f"download of {name} interrupted ({_cause(e)}); the next pull resumes "
                                        "it") from None
        fetcher.discard_part()
        return tar_path
    raise PullRefused(f"{name} does not match its signed length and hashes on any mirror: {problems[-1]}")


def _verify(home: EdgeHome, creator: str, version: int, stage: Path, verify: Verify) -> dict[str, Any]:
    trusted, revoked = trusted_keys_for(home, creator)
    if not trusted:
        claimed = _claimed_key(stage)
        if claimed in revoked:
            raise PullRefused(f"bundle {creator}/{version}.tar refused: signed by revoked key {claimed}")
        raise TrustError(f"no trusted key for creator {creator} on this node; add one with: "
                         f"carryon edge trust add KEY.pub --creator {creator}")
    try:
        manifest = verify(stage, trusted, revoked)
    except CarryonError as e:
        raise PullRefused(f"bundle {creator}/{version}.tar refused: {e}") from None
    if manifest.get("creator_id") != creator or manifest.get("bundle_version") != version:
        raise PullRefused(f"bundle {creator}/{version}.tar refused: its manifest says creator "
                          f"{manifest.get('creator_id')!r} version {manifest.get('bundle_version')!r}")
    return manifest


def _claimed_key(stage: Path) -> str | None:
    """The key id the (not yet verified) manifest names, only to word a refusal."""
    try:
        key_id = json.loads((stage / "manifest.json").read_text(encoding="utf-8"))["signing"]["key_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return key_id if isinstance(key_id, str) else None
