"""Device-side bundle verification: every attack refused with its own message, via the API and the CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import onnx
import pytest
from typer.testing import CliRunner

from edge.golden import check_golden
from edge.golden import main as golden_main
from edge.verify import (
    BundleError,
    ExpiredError,
    ExternalDataError,
    FileSetError,
    ForbiddenFileError,
    ManifestError,
    OperatorError,
    RevokedKeyError,
    RuntimeTooOldError,
    SignatureError,
    UnknownKeyError,
    verify_bundle,
)
from export.bundle import generate_keys, resolve_signing_key
from export.bundle._keys import SigningKey
from export.bundle._sign import SIGNATURE
from tests.test_bundle import NOW, BundleWorld, _iso, bundle_world, resign_bundle

pytestmark = pytest.mark.slow

MEMBERS = ("catalog.json", "feature_spec.json", "golden.json", "manifest.json", "model.sig",
           "models/bonus-ranker.onnx", "models/bonus-ranker.ort", "models/cta.onnx", "models/cta.ort")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def bw(tmp_path_factory: pytest.TempPathFactory) -> BundleWorld:
    return bundle_world(tmp_path_factory.getbasetemp() / "bundle-world")


@pytest.fixture(scope="session")
def original(bw: BundleWorld, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return bw.build(tmp_path_factory.mktemp("verify-built"))


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    folder = tmp_path_factory.mktemp("other-key")
    generate_keys(folder, "other")
    return resolve_signing_key(folder / "other.pem", {}, None, folder)


@pytest.fixture
def bundle(original: dict[str, Any], tmp_path: Path) -> Path:
    """A fresh copy of the built bundle for one test to attack."""
    return Path(shutil.copytree(original["dir"], tmp_path / "bundle"))


def _trusted(bw: BundleWorld) -> dict[str, bytes]:
    return {bw.key.key_id: bw.key.public_pem}


def _cli_verify(folder: Path, public: Path, *extra: str) -> Any:
    from pipeline.cli import app

    return CliRunner().invoke(app, ["bundle", "verify", str(folder), "--key", str(public), *extra])


def _public(bw: BundleWorld) -> Path:
    return bw.root / "keys" / "creator.pub"


def _refused(bw: BundleWorld, folder: Path, error: type[BundleError], match: str, *,
             cli_key: Path | None = None, **kwargs: Any) -> None:
    """Refused by verify_bundle with ``error``, and by `carryon bundle verify --key cli_key` with one line, exit 1."""
    with pytest.raises(error, match=match):
        verify_bundle(folder, kwargs.pop("trusted", _trusted(bw)), kwargs.pop("revoked", set()), **kwargs)
    result = _cli_verify(folder, cli_key or _public(bw), "--no-golden")
    assert result.exit_code == 1
    assert result.output.strip().startswith("carryon: error: ") and len(result.output.strip().splitlines()) == 1


def test_a_built_bundle_verifies(bw: BundleWorld, bundle: Path) -> None:
    manifest = verify_bundle(bundle, _trusted(bw), set(), now=NOW + timedelta(days=1))
    assert manifest["signing"]["key_id"] == bw.key.key_id and manifest["personalization"] is True
    result = _cli_verify(bundle, _public(bw), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["ok"] and out["golden"]["ok"] and out["golden"]["checks"] == 16


def test_the_tar_verifies_through_the_cli_and_a_damaged_tar_does_not(bw: BundleWorld, original: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    ok = _cli_verify(Path(original["tar"]), _public(bw))
    assert ok.exit_code == 0 and ok.output.startswith("ok: ")
    data = bytearray(Path(original["tar"]).read_bytes())
    data[len(data) // 3] ^= 0x01
    damaged = tmp_path / "1.tar"
    damaged.write_bytes(bytes(data))
    result = _cli_verify(damaged, _public(bw), "--no-golden")
    assert result.exit_code == 1 and result.output.startswith("carryon: error: ")


@pytest.mark.parametrize("member", MEMBERS)
def test_a_flipped_byte_in_any_member_is_refused(bw: BundleWorld, bundle: Path, member: str) -> None:
    path = bundle / member
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    _refused(bw, bundle, BundleError, r".")
    with pytest.raises(BundleError) as caught:
        verify_bundle(bundle, _trusted(bw), set())
    if member not in ("manifest.json", SIGNATURE):
        assert member in str(caught.value)  # the message names the altered file


@pytest.mark.parametrize(("name", "error", "match"), [
    ("extra.txt", FileSetError, r"extra.txt: file added to the bundle"),
    ("models/extra.onnx", FileSetError, r"models/extra.onnx: file added"),
    (".gitattributes", ForbiddenFileError, r"\.gitattributes: git-related names are refused"),
    (".git/config", ForbiddenFileError, r"\.git: git-related names are refused"),
    ("models/.gitignore", ForbiddenFileError, r"models/\.gitignore: git-related names are refused"),
])
def test_an_added_file_is_refused(bw: BundleWorld, bundle: Path, name: str, error: type[BundleError],
                                  match: str) -> None:
    (bundle / name).parent.mkdir(parents=True, exist_ok=True)
    (bundle / name).write_text("* filter=lfs\n")
    _refused(bw, bundle, error, match)


def test_model_signings_own_default_would_accept_an_added_gitattributes(bw: BundleWorld, bundle: Path) -> None:
    """Why git paths are hashed and refused: the library's default verification skips them."""
    from model_signing import verifying

    (bundle / ".gitattributes").write_text("*.onnx filter=lfs\n")
    verifying.Config().use_elliptic_key_verifier(public_key=_public(bw)).verify(bundle, bundle / SIGNATURE)
    with pytest.raises(ForbiddenFileError):
        verify_bundle(bundle, _trusted(bw), set())


def test_model_signing_cli_accepts_the_bundle_and_refuses_a_gitattributes_with_git_paths_on(bw: BundleWorld,
                                                                                           bundle: Path) -> None:
    command = [sys.executable, "-m", "model_signing", "verify", "key", "--signature", str(bundle / SIGNATURE),
               "--public_key", str(_public(bw)), "--no-ignore-git-paths", str(bundle)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "Verification succeeded" in done.stdout, done.stderr
    (bundle / ".gitattributes").write_text("x\n")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and ".gitattributes" in done.stderr


@pytest.mark.parametrize("member", ["models/cta.ort", "golden.json", "catalog.json"])
def test_a_removed_file_is_refused(bw: BundleWorld, bundle: Path, member: str) -> None:
    (bundle / member).unlink()
    _refused(bw, bundle, FileSetError, rf"{member}: file removed from the bundle")


def test_a_symlink_is_refused(bw: BundleWorld, bundle: Path) -> None:
    (bundle / "catalog.json").unlink()
    (bundle / "catalog.json").symlink_to(bundle / "golden.json")
    _refused(bw, bundle, ForbiddenFileError, r"catalog.json: a symbolic link")


def test_an_unknown_key_is_refused(bw: BundleWorld, bundle: Path, other_key: SigningKey) -> None:
    _refused(bw, bundle, UnknownKeyError, rf"signed by key {bw.key.key_id}, which this node does not trust",
             trusted={other_key.key_id: other_key.public_pem}, cli_key=other_key.path.with_suffix(".pub"))


def test_a_bundle_signed_by_another_key_is_refused(bw: BundleWorld, bundle: Path, other_key: SigningKey) -> None:
    resign_bundle(bundle, other_key)  # the manifest still names the trusted key
    _refused(bw, bundle, SignatureError, rf"model.sig: the signature does not verify with key {bw.key.key_id}")
    resign_bundle(bundle, other_key, lambda m: m["signing"].update(key_id=other_key.key_id))
    _refused(bw, bundle, UnknownKeyError, rf"signed by key {other_key.key_id}")


def test_a_revoked_key_is_refused(bw: BundleWorld, bundle: Path) -> None:
    with pytest.raises(RevokedKeyError, match=rf"key {bw.key.key_id}, which is revoked"):
        verify_bundle(bundle, _trusted(bw), {bw.key.key_id})


def test_an_operator_outside_the_allowlist_is_refused(bw: BundleWorld, bundle: Path) -> None:
    path = bundle / "models" / "cta.onnx"
    model = onnx.load(str(path))
    (node,) = [n for n in model.graph.node if n.op_type == "Sigmoid"]
    node.op_type = "HardSigmoid"  # a standard ai.onnx operator, not on the edge allowlist
    onnx.save(model, str(path))
    resign_bundle(bundle, bw.key)
    _refused(bw, bundle, OperatorError, r"models/cta.onnx is outside the edge runtime's operator allowlist.*"
                                        r"HardSigmoid")


def test_external_data_is_refused(bw: BundleWorld, bundle: Path) -> None:
    path = bundle / "models" / "cta.onnx"
    model = onnx.load(str(path))
    assert len(model.graph.initializer) > 0
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="cta.weights", size_threshold=0)
    assert (bundle / "models" / "cta.weights").is_file()
    resign_bundle(bundle, bw.key)
    _refused(bw, bundle, ExternalDataError, r"models/cta.onnx: tensor\(s\) .* stored as external data")


def test_an_unknown_manifest_schema_is_refused(bw: BundleWorld, bundle: Path) -> None:
    resign_bundle(bundle, bw.key, lambda m: m.update(schema=2))
    _refused(bw, bundle, ManifestError, r"manifest.json: field 'schema' is 2, this node reads schema 1")


def test_a_bundle_needing_a_newer_onnxruntime_is_refused(bw: BundleWorld, bundle: Path) -> None:
    needed = verify_bundle(bundle, _trusted(bw), set())["min_onnxruntime"]
    assert needed in ("1.20", "1.21")
    with pytest.raises(RuntimeTooOldError, match=rf"need onnxruntime >= {needed}, this node has 1.19.2; upgrade"):
        verify_bundle(bundle, _trusted(bw), set(), runtime="1.19.2")
    verify_bundle(bundle, _trusted(bw), set(), runtime=f"{needed}.0")  # exactly the minimum is enough
    verify_bundle(bundle, _trusted(bw), set(), runtime="1.32.0.dev20261101")
    # The installed runtime judges a bundle built for a future one, through the API and the CLI.
    resign_bundle(bundle, bw.key, lambda m: m.update(min_onnxruntime="99.1"))
    _refused(bw, bundle, RuntimeTooOldError, r"manifest.json: the bundle's models need onnxruntime >= 99.1")


def test_a_malformed_runtime_minimum_is_refused(bw: BundleWorld, bundle: Path) -> None:
    resign_bundle(bundle, bw.key, lambda m: m.update(min_onnxruntime="latest"))
    _refused(bw, bundle, ManifestError, r"field 'min_onnxruntime' is 'latest', not a version")


def test_an_expired_bundle_is_refused_when_the_clock_is_given(bw: BundleWorld, bundle: Path) -> None:
    with pytest.raises(ExpiredError, match="expired at " + re.escape(_iso(NOW + timedelta(days=30)))):
        verify_bundle(bundle, _trusted(bw), set(), now=NOW + timedelta(days=61))


def test_golden_vectors_that_disagree_are_caught_by_the_golden_check_not_the_signature(
        bw: BundleWorld, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    golden = json.loads((bundle / "golden.json").read_text())
    golden["cases"][1]["expected"][0] += 0.01
    (bundle / "golden.json").write_text(json.dumps(golden))
    resign_bundle(bundle, bw.key)
    verify_bundle(bundle, _trusted(bw), set())  # validly signed: the signature has nothing to say
    result = check_golden(bundle)
    assert not result["ok"] and result["failed"] == 2  # the ONNX and the ORT form
    assert result["failures"][0].startswith("case 1 (models/cta.onnx): max |diff| 0.01")
    assert golden_main([str(bundle)]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
    cli = _cli_verify(bundle, _public(bw))
    assert cli.exit_code == 1
    assert "golden.json: the golden vectors disagree on this machine's onnxruntime" in cli.output


def test_the_golden_child_process_reports_json_and_exit_status(bundle: Path, tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "edge.golden", str(bundle)], capture_output=True, text=True,
                        check=False, cwd=ROOT)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    missing = subprocess.run([sys.executable, "-m", "edge.golden", str(tmp_path / "none")], capture_output=True,
                             text=True, check=False, cwd=ROOT)
    assert missing.returncode == 1 and "manifest.json: cannot read it" in json.loads(missing.stdout)["error"]


def test_verification_imports_no_training_stack(bundle: Path, bw: BundleWorld) -> None:
    code = (
        "import sys, json; from pathlib import Path; from edge.verify import verify_bundle, key_id; "
        "import edge.golden; "
        f"pem = Path({str(_public(bw))!r}).read_bytes(); "
        f"verify_bundle(Path({str(bundle)!r}), {{key_id(pem): pem}}, set()); "
        "print(json.dumps(sorted(m for m in ('sklearn', 'lightgbm', 'mlflow', 'dvc', 'polars', 'pandas', "
        "'pyarrow', 'duckdb') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
