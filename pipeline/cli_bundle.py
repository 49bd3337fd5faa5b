"""``carryon keys generate`` and ``carryon bundle build|verify``: creator keys and signed bundles.

Stage code is imported inside each command, so mounting these costs only typer; ``bundle verify``
and ``keys generate`` need only the base dependencies.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline._cli_common import JsonOpt, ParamsOpt, fail
from pipeline._cli_common import run as _run

keys_app = typer.Typer(help="Creator signing keys (EC P-256, PEM).", no_args_is_help=True)
bundle_app = typer.Typer(help="Build and verify signed bundles.", no_args_is_help=True)

GOLDEN_TIMEOUT_S = 300.0
MAX_TAR_MEMBERS = 64
MAX_TAR_BYTES = 512 << 20


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option(help="Directory for <name>.pem (mode 0600) and <name>.pub.")] = Path(
        ".carryon/keys"),
    name: Annotated[str, typer.Option(help="File name of the pair (e.g. the creator id).")] = "creator",
    passphrase_env: Annotated[str | None, typer.Option(
        "--passphrase-env", help="Encrypt the private key with the passphrase in this environment variable.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a creator signing key pair; refuses to overwrite an existing key."""
    passphrase: bytes | None = None
    if passphrase_env is not None:
        value = os.environ.get(passphrase_env)
        if not value:
            raise fail(f"--passphrase-env {passphrase_env}: that environment variable is not set or empty; "
                       "export the passphrase in it first")
        passphrase = value.encode("utf-8")

    def call() -> dict[str, Any]:
        from export.bundle import generate_keys

        return generate_keys(out, name, passphrase)

    _run(call, as_json, lambda r: (
        f"key {r['key_id']}: private {r['private_key']} (mode 0600{', encrypted' if r['encrypted'] else ''}), "
        f"public {r['public_key']}\nkeep the private key secret; give edge nodes the public key "
        "(`carryon edge trust add`)"))


def _consent(ingest_report: Path) -> dict[str, Any]:
    from features.errors import InputUnreadableError

    try:
        report = json.loads(ingest_report.read_text(encoding="utf-8"))
        consent = report["consent"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputUnreadableError(
            f"{ingest_report}: cannot read the consent snapshot of the ingest report ({e}); run `carryon ingest` "
            "or pass --ingest-report") from None
    return dict(consent)


def _export_report(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # optional: without it the deployed files are found by name
    return data if isinstance(data, dict) else None


@bundle_app.command("build")
def bundle_build(
    alias: Annotated[str, typer.Option(help="candidate (the release rehearsal) or champion (what ships).")] = (
        "candidate"),
    creator: Annotated[str | None, typer.Option(help="Creator id [default: bundle.creator, else the first]")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output directory [default: data/bundle for candidate, .carryon/bundles for champion].")] = None,
    key: Annotated[Path | None, typer.Option(
        "--key", help="Creator private key (PEM) [default: env CARRYON_SIGNING_KEY, bundle.signing_key_file, "
                      "else a local development key].")] = None,
    kill_switch: Annotated[bool, typer.Option(
        "--kill-switch", help="A bundle without models that turns personalization off.")] = False,
    export_dir: Annotated[Path, typer.Option("--export", help="Exported models directory.")] = Path("data/export"),
    features_dir: Annotated[Path, typer.Option("--features", help="Features directory (catalog, spec).")] = Path(
        "data/features"),
    export_report: Annotated[Path, typer.Option(help="The export report.")] = Path("metrics/export.json"),
    ingest_report: Annotated[Path, typer.Option(help="The ingest report (consent snapshot).")] = Path(
        "metrics/ingest.json"),
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Build, sign and pack a creator's bundle from the model versions carrying --alias."""
    if alias not in ("candidate", "champion"):
        raise fail(f"--alias must be candidate or champion, got {alias!r}")
    target = out or Path("data/bundle" if alias == "candidate" else ".carryon/bundles")

    def call() -> dict[str, Any]:
        import dataclasses
        import hashlib

        from export.bundle import build_bundle, resolve_signing_key
        from pipeline.params import load_params
        from pipeline.record import git_commit

        p = load_params(params)
        project = Path.cwd()
        signing_key = resolve_signing_key(key, os.environ, p.bundle.signing_key_file, project)
        client = None
        if not kill_switch:
            from pipeline.tracking import open_tracking

            client = open_tracking(project, os.environ)
        settings = json.dumps([dataclasses.asdict(p.bundle), dataclasses.asdict(p.policy)], sort_keys=True,
                              default=str)
        lineage = {"git_commit": git_commit(project), "params_sha256": hashlib.sha256(settings.encode()).hexdigest()}
        return build_bundle(
            client, alias=alias, creator=creator or p.bundle.creator, export_dir=export_dir,
            features_dir=features_dir, out_dir=target, key=signing_key,
            versions_file=Path(".carryon/bundle_versions.json"), exploration=p.policy.exploration,
            creator_caps=p.policy.creator_caps, expires_days=p.bundle.expires_days,
            golden_per_model=p.bundle.golden_cases, build_lineage=lineage, consent=_consent(ingest_report),
            export_report=_export_report(export_report), kill_switch=kill_switch)

    def human(r: dict[str, Any]) -> str:
        models = ", ".join(f"{k} v{m['version']} ({m['family']})" for k, m in r["models"].items()) or "no models"
        kind = "kill switch (personalization off)" if not r["personalization"] else models
        lines = [f"bundle {r['creator_id']} version {r['bundle_version']}"
                 f"{' (rehearsal, version not reserved)' if r['rehearsal'] else ''}: {kind}",
                 f"  {r['tar']} ({r['tar_size']:,} bytes, sha256 {r['tar_sha256'][:16]}), signed by key {r['key_id']}"]
        if r["dev_key"]:
            lines.append(f"note: signed with a local development key ({r['key']}); set CARRYON_SIGNING_KEY or "
                         "bundle.signing_key_file to the creator's key for bundles that ship")
        return "\n".join(lines)

    _run(call, as_json, human)


def _default_public_key(params: Path) -> Path:
    from export.bundle._keys import DEV_KEY_DIR, DEV_KEY_NAME, ENV_KEY
    from features.errors import ConfigError
    from pipeline.params import load_params

    configured = os.environ.get(ENV_KEY) or load_params(params).bundle.signing_key_file
    private = Path(configured) if configured else DEV_KEY_DIR / f"{DEV_KEY_NAME}.pem"
    public = private.with_suffix(".pub")
    if not public.is_file():
        raise ConfigError(f"no public key at {public} (beside the configured signing key); pass --key PUB.pem")
    return public


def _extract(tar_path: Path, into: Path) -> Path:
    """Unpack a bundle tar with tarfile's data filter, regular files only, within the caps."""
    import tarfile

    from edge.verify import ForbiddenFileError

    try:
        with tarfile.open(tar_path, "r:") as tar:
            members = tar.getmembers()
            if len(members) > MAX_TAR_MEMBERS or sum(m.size for m in members) > MAX_TAR_BYTES:
                raise ForbiddenFileError(f"{tar_path.name}: more than {MAX_TAR_MEMBERS} members or "
                                         f"{MAX_TAR_BYTES >> 20} MiB; not a bundle")
            for m in members:
                if not m.isreg():
                    raise ForbiddenFileError(f"{tar_path.name}: member {m.name!r} is not a regular file")
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise ForbiddenFileError(f"{tar_path.name}: not a readable uncompressed bundle tar ({e})") from None
    return into


def _golden_child(bundle_dir: Path) -> dict[str, Any]:
    import subprocess

    from edge.golden import GoldenError

    try:
        done = subprocess.run([sys.executable, "-m", "edge.golden", str(bundle_dir)], capture_output=True,
                              text=True, timeout=GOLDEN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise GoldenError(f"golden vectors: the check ran past {GOLDEN_TIMEOUT_S:g} s") from None
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = {"ok": False, "error": f"the check crashed (exit {done.returncode}): "
                                        f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}"}
    if done.returncode != 0 or not result.get("ok"):
        why = result.get("error") or "; ".join(result.get("failures", [])[:3])
        raise GoldenError(f"golden.json: the golden vectors disagree on this machine's onnxruntime ({why})")
    return result


def _verify_one(bundle: Path, public_pem: bytes, golden: bool) -> dict[str, Any]:
    import tempfile
    from datetime import UTC, datetime

    from edge.verify import key_id, verify_bundle

    trusted = {key_id(public_pem): public_pem}
    with tempfile.TemporaryDirectory(prefix="carryon-verify-") as tmp:
        folder = _extract(bundle, Path(tmp) / "bundle") if bundle.is_file() else bundle
        manifest = verify_bundle(folder, trusted, set(), now=datetime.now(UTC))
        checked = _golden_child(folder) if golden else None
    return {"bundle": str(bundle), "ok": True, "creator_id": manifest["creator_id"],
            "bundle_version": manifest["bundle_version"], "key_id": manifest["signing"]["key_id"],
            "dev_key": bool(manifest["signing"].get("dev_key")), "personalization": manifest["personalization"],
            "expires_at": manifest["expires_at"], "rehearsal": bool(manifest.get("rehearsal", False)),
            "golden": checked}


def _bundles(path: Path) -> list[Path]:
    from features.errors import InputUnreadableError

    if path.is_file() or (path / "manifest.json").is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.rglob("*.tar"))
        if found:
            return found
    raise InputUnreadableError(f"{path}: not a bundle tar, a bundle directory, or a directory holding bundle tars")


@bundle_app.command("verify")
def bundle_verify(
    bundle: Annotated[Path, typer.Argument(help="A bundle .tar, a bundle directory, or a directory of bundle tars.")],
    key: Annotated[Path | None, typer.Option(
        "--key", help="The creator's public key (PEM) [default: the .pub beside the configured signing key].")] = None,
    golden: Annotated[bool, typer.Option(help="Run the golden vectors (in a child process).")] = True,
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Check a bundle offline: key, signature (git paths included), files, operators, golden vectors."""

    def call() -> dict[str, Any]:
        from features.errors import ConfigError

        public = key or _default_public_key(params)
        try:
            pem = public.read_bytes()
        except OSError as e:
            raise ConfigError(f"{public}: cannot read the public key ({e.strerror})") from None
        results = [_verify_one(b, pem, golden) for b in _bundles(bundle)]
        return results[0] if len(results) == 1 else {"ok": True, "bundles": results}

    def human(r: dict[str, Any]) -> str:
        rows = r.get("bundles", [r])
        return "\n".join(
            f"ok: {x['bundle']}: {x['creator_id']} version {x['bundle_version']}, key {x['key_id']}"
            f"{' (development key)' if x['dev_key'] else ''}"
            f"{', golden vectors agree (' + str(x['golden']['cases']) + ' cases)' if x['golden'] else ''}"
            for x in rows)

    _run(call, as_json, human)


def register(app: typer.Typer) -> None:
    """Add ``carryon keys`` and ``carryon bundle`` to ``app``."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(bundle_app, name="bundle")
