"""Verify an unpacked bundle before anything runs it: trusted key, signature, exact file set, safe models.

``verify_bundle`` returns the manifest only if every check passes; each refusal is a
``BundleError`` subclass with one message naming the file and what is wrong. Checks, in order:
the manifest's schema; its key id is trusted and not revoked; the directory holds exactly the
manifest's files plus ``manifest.json`` and ``model.sig`` (regular files only; any ``.git*`` name
is refused outright); the OpenSSF model signature verifies with that key over every file, git
paths included; every file's sha256 matches the manifest; every model uses only allowlisted
operators and embeds its tensors; this node's onnxruntime is at least the bundle's
``min_onnxruntime``. Device-side: base dependencies only.

    >>> manifest = verify_bundle(Path("bundle"), {key_id: public_pem}, revoked=set())
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import onnx
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

# At import, not inside _check_signature: `import model_signing` loads sigstore and pydantic models (~250 ms),
# which would otherwise be billed to the first verification (~10 ms of actual work).
from model_signing import hashing, verifying

from edge._runtime_version import installed_onnxruntime, release, too_old
from export.allowlist import OperatorNotAllowed, check_operators, load_allowlist
from features.errors import CarryonError
from features.spec import FeatureSpec

SCHEMA: Final = 1
MANIFEST: Final = "manifest.json"
SIGNATURE: Final = "model.sig"
KEY_ID_CHARS: Final = 16
_REQUIRED: Final = ("schema", "creator_id", "bundle_version", "created_at", "expires_at", "personalization",
                    "signing", "models", "required_operators", "feature_spec", "exploration", "files")
_MODEL_KINDS: Final = ("cta", "bonus-ranker")
_CONTENT: Final = ("catalog.json", "feature_spec.json", "golden.json")  # every bundle has these


class BundleError(CarryonError):
    """A bundle failed verification; nothing of it may be installed or run."""


class ManifestError(BundleError):
    """manifest.json is missing, unreadable, of an unknown schema or inconsistent."""


class UnknownKeyError(BundleError):
    """The bundle names a signing key this node does not trust."""


class RevokedKeyError(BundleError):
    """The bundle names a signing key that has been revoked."""


class SignatureError(BundleError):
    """The model signature does not verify with the named key."""


class ForbiddenFileError(BundleError):
    """The bundle holds a git-related name, a link, or a file that is not a regular file."""


class FileSetError(BundleError):
    """The bundle's files differ from the manifest's list: a file added or removed."""


class DigestError(BundleError):
    """A file's sha256 differs from the manifest's."""


class OperatorError(BundleError):
    """A model uses an operator, domain or opset outside the edge runtime's allowlist."""


class ExternalDataError(BundleError):
    """A model keeps tensors in external data files."""


class ExpiredError(BundleError):
    """The bundle is past its expiry time."""


class RuntimeTooOldError(BundleError):
    """This node's onnxruntime is older than the bundle's ``min_onnxruntime``: its models would not load."""


def key_id(public_pem: bytes) -> str:
    """First 16 hex chars of sha256 over the public key's DER SubjectPublicKeyInfo (as ``carryon keys`` prints)."""
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key(public_pem)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:KEY_ID_CHARS]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """The manifest, parsed and shape-checked (not yet trusted)."""
    path = bundle_dir / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise ManifestError(f"{MANIFEST}: missing from the bundle (or not a regular file); rebuild the bundle")
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ManifestError(f"{MANIFEST}: not readable JSON ({e}); the bundle is damaged, fetch it again") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{MANIFEST}: must be a JSON object; the bundle is damaged, fetch it again")
    if manifest.get("schema") != SCHEMA:
        raise ManifestError(
            f"{MANIFEST}: field 'schema' is {manifest.get('schema')!r}, this node reads schema {SCHEMA}; "
            "update carryon on this node or rebuild the bundle"
        )
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ManifestError(f"{MANIFEST}: missing field(s) {', '.join(missing)}; rebuild the bundle")
    files, signing = manifest["files"], manifest["signing"]
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ManifestError(f"{MANIFEST}: field 'files' must map relative paths to sha256 hex; rebuild the bundle")
    if not isinstance(signing, dict) or not isinstance(signing.get("key_id"), str):
        raise ManifestError(f"{MANIFEST}: field 'signing.key_id' must be a key id string; rebuild the bundle")
    if not isinstance(manifest["models"], dict) or set(manifest["models"]) - set(_MODEL_KINDS):
        raise ManifestError(f"{MANIFEST}: field 'models' must map {' and '.join(_MODEL_KINDS)} to model entries")
    unlisted = [name for name in _CONTENT if name not in files]
    if unlisted:
        raise ManifestError(f"{MANIFEST}: field 'files' does not list {', '.join(unlisted)}; rebuild the bundle")
    if manifest["personalization"] is True and set(manifest["models"]) != set(_MODEL_KINDS):
        raise ManifestError(f"{MANIFEST}: a personalized bundle needs models {' and '.join(_MODEL_KINDS)}")
    return manifest


def _trusted_key(manifest: Mapping[str, Any], trusted: Mapping[str, bytes], revoked: set[str]) -> bytes:
    kid = manifest["signing"]["key_id"]
    if kid in revoked:
        raise RevokedKeyError(f"{MANIFEST}: signed by key {kid}, which is revoked on this node; ask the creator "
                              "for a bundle signed with their current key")
    if kid not in trusted:
        raise UnknownKeyError(f"{MANIFEST}: signed by key {kid}, which this node does not trust; add the creator's "
                              "public key with `carryon edge trust add`")
    pem = trusted[kid]
    actual = key_id(pem)
    if actual in revoked:
        raise RevokedKeyError(f"{MANIFEST}: key {kid} is trusted under that id but its key is revoked as {actual}")
    if actual != kid:
        raise UnknownKeyError(f"trusted key {kid}: its public key has id {actual}; fix the trust store entry")
    return pem


def _walk(bundle_dir: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below ``bundle_dir`` (relative POSIX path, lstat), links never followed."""
    for folder, dirs, files in os.walk(bundle_dir, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            yield path.relative_to(bundle_dir).as_posix(), path.lstat()


def _check_file_set(bundle_dir: Path, manifest: Mapping[str, Any]) -> None:
    import stat

    present: set[str] = set()
    for rel, st in _walk(bundle_dir):
        if any(part.lower().startswith(".git") for part in rel.split("/")):
            raise ForbiddenFileError(f"{rel}: git-related names are refused in a bundle (model signing tools skip "
                                     "them by default); the bundle was tampered with")
        if stat.S_ISLNK(st.st_mode):
            raise ForbiddenFileError(f"{rel}: a symbolic link; bundles hold regular files only")
        if stat.S_ISDIR(st.st_mode):
            continue
        if not stat.S_ISREG(st.st_mode):
            raise ForbiddenFileError(f"{rel}: not a regular file (device, pipe or socket); bundles hold regular files")
        present.add(rel)
    expected = set(manifest["files"]) | {MANIFEST, SIGNATURE}
    added, removed = sorted(present - expected), sorted(expected - present)
    if added:
        raise FileSetError(f"{added[0]}: file added to the bundle (the signed manifest does not list it)"
                           + (f", and {len(added) - 1} more" if len(added) > 1 else ""))
    if removed:
        raise FileSetError(f"{removed[0]}: file removed from the bundle (the signed manifest lists it)"
                           + (f", and {len(removed) - 1} more" if len(removed) > 1 else ""))


def _check_signature(bundle_dir: Path, public_pem: bytes, kid: str) -> None:
    hashing_config = hashing.Config().set_ignored_paths(  # type: ignore[no-untyped-call]
        paths=[SIGNATURE], ignore_git_paths=False).set_allow_symlinks(False)
    with tempfile.TemporaryDirectory(prefix="carryon-key-") as tmp:
        key_file = Path(tmp) / "key.pub"
        key_file.write_bytes(public_pem)
        try:
            config = verifying.Config().use_elliptic_key_verifier(public_key=key_file)  # type: ignore[no-untyped-call]
            config.set_hashing_config(hashing_config).verify(bundle_dir, bundle_dir / SIGNATURE)
        except Exception as e:  # the boundary: model-signing raises ValueError, cryptography and parse errors
            text = str(e).strip()
            named = sorted(set(re.findall(r"Hash mismatch for '([^']+)'", text)))
            reason = (f"content differs from the signed content: {', '.join(named)}" if text.startswith(
                "Signature mismatch") and named else (text.splitlines()[0] if text else type(e).__name__))
            raise SignatureError(f"{SIGNATURE}: the signature does not verify with key {kid} ({reason}); "
                                 "the bundle was altered or signed by another key") from None


def _check_digests(bundle_dir: Path, manifest: Mapping[str, Any]) -> None:
    for rel, expected in sorted(manifest["files"].items()):
        actual = _sha256(bundle_dir / rel)
        if actual != expected:
            raise DigestError(f"{rel}: sha256 {actual[:12]}… differs from the manifest's {expected[:12]}…")


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            yield from (g for sub in attr.graphs for g in _graphs(sub))


def _external_tensors(model: onnx.ModelProto) -> list[str]:
    names = []
    for graph in _graphs(model.graph):
        tensors = [*graph.initializer, *(s.values for s in graph.sparse_initializer)]
        tensors += [t for node in graph.node for attr in node.attribute for t in [attr.t, *attr.tensors]]
        names += [t.name or "(unnamed)" for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]
    return sorted(set(names))


def _check_models(bundle_dir: Path, manifest: Mapping[str, Any]) -> None:
    allowlist = load_allowlist()
    for kind, entry in sorted(manifest["models"].items()):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("file", "ort_file")):
            raise ManifestError(f"{MANIFEST}: models.{kind} must name its 'file' and 'ort_file'")
        for field, sha in (("file", "sha256"), ("ort_file", "ort_sha256")):
            if manifest["files"].get(entry[field]) != entry.get(sha):
                raise ManifestError(f"{MANIFEST}: models.{kind}.{sha} disagrees with files[{entry[field]!r}]")
        rel = entry["file"]
        try:
            model = onnx.load_model_from_string((bundle_dir / rel).read_bytes())
        except (DecodeError, ValueError, OSError) as e:
            raise ManifestError(f"{rel}: not a readable ONNX model ({type(e).__name__}); rebuild the bundle") from None
        external = _external_tensors(model)
        if external:
            raise ExternalDataError(f"{rel}: tensor(s) {', '.join(external[:5])} stored as external data; a bundle's "
                                    "models must embed every tensor")
        try:
            check_operators(model, allowlist, rel)
        except OperatorNotAllowed as e:
            raise OperatorError(str(e)) from None
    for op in manifest["required_operators"]:
        if not (isinstance(op, list) and len(op) == 3 and allowlist.allows(str(op[0]), str(op[1]), int(op[2]))):
            raise OperatorError(f"{MANIFEST}: required operator {op} is outside the edge runtime's allowlist")


def _check_spec(bundle_dir: Path, manifest: Mapping[str, Any]) -> None:
    entry = manifest["feature_spec"]
    name = entry.get("file") if isinstance(entry, dict) else None
    if name != "feature_spec.json":
        raise ManifestError(f"{MANIFEST}: field 'feature_spec.file' must be 'feature_spec.json', got {name!r}")
    try:
        spec = FeatureSpec.from_json((bundle_dir / name).read_text(encoding="utf-8"), name)
    except (CarryonError, UnicodeDecodeError) as e:
        raise ManifestError(f"{name}: not a valid feature spec ({e}); rebuild the bundle") from None
    if spec.hash != entry.get("hash"):
        raise ManifestError(f"{MANIFEST}: feature_spec.hash {str(entry.get('hash'))[:12]}… differs from the spec's "
                            f"{spec.hash[:12]}…; rebuild the bundle")


def _check_runtime(manifest: Mapping[str, Any], installed: str) -> None:
    """Refuse a bundle that needs a newer onnxruntime than ``installed`` (bundles without the field pass)."""
    needed = manifest.get("min_onnxruntime")
    if needed is None:
        return
    if release(str(needed)) is None:
        raise ManifestError(f"{MANIFEST}: field 'min_onnxruntime' is {needed!r}, not a version like '1.21'; "
                            "rebuild the bundle")
    if too_old(installed, str(needed)):
        raise RuntimeTooOldError(f"{MANIFEST}: the bundle's models need onnxruntime >= {needed}, this node has "
                                 f"{installed}; upgrade it (pip install 'onnxruntime>={needed}') before installing")


def _check_expiry(manifest: Mapping[str, Any], now: datetime) -> None:
    try:
        expires = datetime.fromisoformat(str(manifest["expires_at"]).replace("Z", "+00:00"))
    except ValueError:
        raise ManifestError(f"{MANIFEST}: field 'expires_at' is not an ISO time: {manifest['expires_at']!r}") from None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if now >= expires:
        raise ExpiredError(f"{MANIFEST}: the bundle expired at {manifest['expires_at']}; publish a fresh one")


def verify_bundle(bundle_dir: Path, trusted: Mapping[str, bytes], revoked: set[str], *,
                  now: datetime | None = None, runtime: str | None = None) -> dict[str, Any]:
    """Return the manifest of ``bundle_dir`` if it passes every check; else raise a ``BundleError``.

    ``trusted`` maps key ids to public keys (PEM); ``revoked`` holds revoked key ids. With ``now``,
    a bundle past its ``expires_at`` is refused too (the caller decides whether its clock is sane).
    ``runtime`` is the onnxruntime version to judge ``min_onnxruntime`` against (default: the installed one).
    """
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    public_pem = _trusted_key(manifest, trusted, revoked)
    _check_file_set(bundle_dir, manifest)
    _check_digests(bundle_dir, manifest)  # against the manifest, which the signature then covers
    _check_signature(bundle_dir, public_pem, manifest["signing"]["key_id"])
    _check_spec(bundle_dir, manifest)
    _check_models(bundle_dir, manifest)
    _check_runtime(manifest, installed_onnxruntime() if runtime is None else runtime)
    if now is not None:
        _check_expiry(manifest, now)
    return manifest
