"""``carryon publish`` and ``carryon repo``: the TUF repository edge nodes pull signed bundles from.

Flags become calls of ``export.publish`` (imported inside each command, so only typer loads at
mount time). Defaults come from params.yaml's ``publish`` section; a refusal is one line on stderr
(``carryon: error: ...``) and exit status 1; ``--json`` prints the result for machines. ``--upload
s3://BUCKET/PREFIX`` (and ``carryon repo sync``) then copies the repository to object storage, timestamp last.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from features.errors import CarryonError
from pipeline._cli_common import JsonOpt
from pipeline._cli_common import fail as _fail
from pipeline._cli_common import run as _run

if TYPE_CHECKING:
    from export.publish import RepoConfig

repo_app = typer.Typer(help="The TUF repository: create it, show it, revoke creator keys, rotate role keys.",
                       no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

RepoOpt = Annotated[Path | None, typer.Option(
    "--repo", help="Repository directory (default: publish.repository in params).")]
KeysOpt = Annotated[Path | None, typer.Option(
    "--keys", help="Role keys directory (default: publish.keys_dir in params).")]
ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read (the publish section).")]
UploadOpt = Annotated[str | None, typer.Option(
    "--upload", metavar="s3://BUCKET/PREFIX",
    help="Then copy the repository to this bucket (boto3; endpoint from CARRYON_S3_ENDPOINT_URL or "
         "AWS_ENDPOINT_URL), timestamp.json last.")]


def _config(params: Path, repo: Path | None, keys: Path | None) -> RepoConfig:
    from export.publish import Expiries, RepoConfig
    from pipeline.params import load_params

    p = load_params(params).publish
    return RepoConfig(repository=repo or Path(p.repository), keys_dir=keys or Path(p.keys_dir),
                      expiries=Expiries(p.root_expires_days, p.targets_expires_days, p.snapshot_expires_days,
                                        p.timestamp_expires_hours))


def _published(r: dict[str, Any]) -> str:
    lines = [f"published {r['target']} (sha256 {r['sha256'][:12]}, {r['length']:,} bytes); "
             f"timestamp version {r['timestamp_version']} expires {r['timestamp_expires']}"]
    if r["forced"]:
        lines.append(f"note: --force published a non-champion bundle: {r['not_champion_reason']}")
    if not r["personalization"]:
        lines.append("note: this bundle turns personalization off (kill switch): nodes serve the creator's defaults")
    return "\n".join(lines)


def _refreshed(r: dict[str, Any]) -> str:
    line = f"re-signed {', '.join(r['resigned'])}; timestamp expires {r['timestamp_expires']}"
    if r["root_renewal_due"]:
        line += f"\nwarning: root expires {r['root_expires']}; renew it with: carryon repo rotate-root --keep-keys"
    return line


def _uploaded(r: dict[str, Any]) -> str:
    if not r["uploaded"]:
        return f"{r['url']} is up to date ({r['skipped']} objects already there)"
    return (f"uploaded {len(r['uploaded'])} objects ({r['uploaded_bytes']:,} bytes) to {r['url']}, timestamp.json "
            f"last; {r['skipped']} already there")


def _with_upload(result: dict[str, Any], repository: Path, upload: str | None, what: str) -> dict[str, Any]:
    """Upload after a local change; a failure says the change is published locally and how to finish."""
    if upload is None:
        return result
    from export.publish import ObjectStoreError, upload_repository

    try:
        return {**result, "upload": upload_repository(repository, upload)}
    except CarryonError as e:
        raise ObjectStoreError(f"{what} in {repository}, but not uploaded: {e}") from e


def publish_command(
    bundle: Annotated[Path | None, typer.Argument(help="Bundle tar (<version>.tar) to publish.")] = None,
    refresh: Annotated[bool, typer.Option(
        "--refresh", help="Re-sign the timestamp (and snapshot) so nodes don't freeze; run it on a schedule.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Publish a bundle that is not the champion.")] = False,
    upload: UploadOpt = None,
    repo: RepoOpt = None,
    keys: KeysOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Publish a champion bundle to the TUF repository, or with --refresh re-sign its timestamp."""
    if refresh == (bundle is not None):
        raise _fail("give either a bundle tar to publish or --refresh, not both and not neither")

    def call() -> dict[str, Any]:
        from export.publish import parse_bucket_url, publish_bundle
        from export.publish import refresh as run_refresh

        if upload is not None:
            parse_bucket_url(upload)  # a typo in the URL is refused before anything is signed
        config = _config(params, repo, keys)
        if bundle is None:
            return _with_upload(run_refresh(config), config.repository, upload, "re-signed")
        result = publish_bundle(config, bundle, force=force)
        return _with_upload(result, config.repository, upload, f"published {result['target']}")

    def human(r: dict[str, Any]) -> str:
        text = _refreshed(r) if refresh else _published(r)
        return text + (f"\n{_uploaded(r['upload'])}" if "upload" in r else "")

    _run(call, as_json, human)


@repo_app.command("init")
def init_command(repo: RepoOpt = None, keys: KeysOpt = None, params: ParamsOpt = Path("params.yaml"),
                 as_json: JsonOpt = False) -> None:
    """Create the repository: one key per role (mode 0600, apart from it) and version 1 of each role."""

    def call() -> dict[str, Any]:
        from export.publish import init_repository

        return init_repository(_config(params, repo, keys))

    def human(r: dict[str, Any]) -> str:
        return (f"TUF repository created in {r['repository']} (role keys in {r['keys_dir']}, keep them safe)\n"
                f"bootstrap nodes with: carryon edge init --root {r['repository']}/{r['root']}\n"
                f"serve {r['repository']} with any static HTTP server; run `carryon publish --refresh` "
                f"before the timestamp expires ({r['expires']['timestamp']})")

    _run(call, as_json, human)


@repo_app.command("status")
def status_command(repo: RepoOpt = None, params: ParamsOpt = Path("params.yaml"), as_json: JsonOpt = False) -> None:
    """Show each role's version and expiry, the bundle versions per creator and revoked creator keys."""

    def call() -> dict[str, Any]:
        from export.publish import repository_status
        from pipeline.params import load_params

        return repository_status(repo or Path(load_params(params).publish.repository))

    def human(r: dict[str, Any]) -> str:
        lines = [f"{role}: version {r['versions'][role]}, expires {r['expires'][role]}"
                 + (" (EXPIRED)" if role in r["expired"] else "") for role in ("root", "targets", "snapshot",
                                                                             "timestamp")]
        lines += [f"creator {c}: newest version {v['newest']} ({len(v['versions'])} published)"
                  for c, v in r["creators"].items()] or ["no bundles published yet"]
        lines += [f"revoked creator key {k['key_id']} at {k['revoked_at']}: {k['reason']}" for k in r["revoked_keys"]]
        return "\n".join(lines)

    _run(call, as_json, human)


@repo_app.command("revoke")
def revoke_command(
    key_id: Annotated[str, typer.Argument(help="Creator key id (the manifest's signing.key_id).")],
    reason: Annotated[str, typer.Option("--reason", help="Why; published to every node.")],
    repo: RepoOpt = None,
    keys: KeysOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Revoke a creator signing key for every node: publishes the signed revocation list."""

    def call() -> dict[str, Any]:
        from export.publish import revoke_creator_key

        return revoke_creator_key(_config(params, repo, keys), key_id, reason)

    def human(r: dict[str, Any]) -> str:
        if r["already_revoked"]:
            return f"creator key {r['key_id']} was already revoked; nothing published"
        return (f"revoked creator key {r['key_id']} (targets version {r['targets_version']}); "
                "nodes drop it on their next pull")

    _run(call, as_json, human)


@repo_app.command("sync")
def sync_command(
    url: Annotated[str, typer.Argument(metavar="s3://BUCKET/PREFIX", help="Where to copy the repository to.")],
    repo: RepoOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Copy the repository to an S3-compatible bucket: new objects first, timestamp.json last, nothing deleted."""

    def call() -> dict[str, Any]:
        from export.publish import upload_repository
        from pipeline.params import load_params

        return upload_repository(repo or Path(load_params(params).publish.repository), url)

    _run(call, as_json, _uploaded)


@repo_app.command("rotate-root")
def rotate_root_command(
    roles: Annotated[list[str] | None, typer.Option(
        "--role", help="Role whose key to replace (repeatable): root, targets, snapshot, timestamp [default: root].")
    ] = None,
    keep_keys: Annotated[bool, typer.Option(
        "--keep-keys", help="Replace no key: re-sign root with a fresh expiry.")] = False,
    repo: RepoOpt = None,
    keys: KeysOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Publish a new root version replacing the keys of the roles asked for (TUF root rotation)."""
    if keep_keys and roles:
        raise _fail("give either --role or --keep-keys, not both")
    chosen: tuple[str, ...] = () if keep_keys else tuple(roles or ("root",))

    def call() -> dict[str, Any]:
        from export.publish import rotate_root

        return rotate_root(_config(params, repo, keys), chosen)

    def human(r: dict[str, Any]) -> str:
        what = f"new keys for {', '.join(r['rotated'])}" if r["rotated"] else "same keys, fresh expiry"
        lines = [f"root version {r['root_version']} published ({what}); expires {r['root_expires']}"]
        if r["retired_key_files"]:
            lines.append(f"retired private keys moved to {', '.join(r['retired_key_files'])} in the keys directory: "
                         "archive them offline or destroy them")
        return "\n".join(lines)

    _run(call, as_json, human)


def register(app: typer.Typer) -> None:
    """Add ``carryon publish`` and ``carryon repo`` to ``app``."""
    app.command("publish")(publish_command)
    app.add_typer(repo_app, name="repo")
