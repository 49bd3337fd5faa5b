"""Creator signing keys: file modes, key ids, passphrases, no overwrite, and which key a build uses."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from edge import verify
from export.bundle import SigningKeyError, generate_keys, key_id, resolve_signing_key
from export.bundle._keys import DEV_KEY_DIR, ENV_KEY, ENV_PASSPHRASE, load_signing_key
from export.bundle._sign import sign_dir

ROOT = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _carryon(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, capture_output=True, text=True,
                          check=False, env={**os.environ, **(env or {})})


def test_generate_writes_a_p256_pair_with_a_private_file_of_mode_0600(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the private key
    try:
        result = generate_keys(tmp_path / "keys", "cr-01")
    finally:
        os.umask(old)
    private, public = tmp_path / "keys" / "cr-01.pem", tmp_path / "keys" / "cr-01.pub"
    assert _mode(private) == 0o600
    assert _mode(public) & 0o077 != 0o077  # readable public half, no surprise modes
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    assert key.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    der = serialization.load_pem_public_key(public.read_bytes()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert result["key_id"] == hashlib.sha256(der).hexdigest()[:16] == key_id(public.read_bytes())
    assert result["key_id"] == verify.key_id(public.read_bytes())  # the device computes the same id
    assert result["encrypted"] is False


def test_the_private_key_is_created_0600_and_exclusive_from_the_first_byte(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: str, flags: int, mode: int = 0o777, *args: object, **kwargs: object) -> int:
        calls.append((str(path), flags, mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    generate_keys(tmp_path, "k")
    monkeypatch.undo()
    (flags, mode), = [(f, m) for p, f, m in calls if p.endswith("k.pem")]
    assert mode == 0o600 and flags & os.O_EXCL and flags & os.O_CREAT


@pytest.mark.parametrize("existing", ["k.pem", "k.pub"])
def test_generate_refuses_to_overwrite_a_key(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("precious")
    with pytest.raises(SigningKeyError, match=rf"{existing}: a key already exists; refusing to overwrite"):
        generate_keys(tmp_path, "k")
    assert (tmp_path / existing).read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_passphrase_round_trip_signs_and_verifies(tmp_path: Path) -> None:
    from model_signing import hashing, verifying

    result = generate_keys(tmp_path / "keys", "enc", b"correct horse")
    assert result["encrypted"] is True
    private = tmp_path / "keys" / "enc.pem"
    assert b"ENCRYPTED" in private.read_bytes()
    with pytest.raises(SigningKeyError, match=f"it is encrypted: set {ENV_PASSPHRASE}"):
        load_signing_key(private, None, source="--key")
    with pytest.raises(SigningKeyError, match="wrong passphrase"):
        load_signing_key(private, b"wrong", source="--key")
    key = load_signing_key(private, b"correct horse", source="--key")
    assert key.key_id == result["key_id"] and "correct horse" not in repr(key)
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x01\x02")
    sign_dir(model, key.path, key.passphrase)
    config = hashing.Config().set_ignored_paths(paths=["model.sig"], ignore_git_paths=False)
    verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "keys" / "enc.pub").set_hashing_config(
        config).verify(model, model / "model.sig")
    (model / "weights.bin").write_bytes(b"\x01\x03")
    with pytest.raises(ValueError, match="Signature mismatch"):
        verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "keys" / "enc.pub").set_hashing_config(
            config).verify(model, model / "model.sig")


def test_resolution_order_key_env_params_then_dev_key(tmp_path: Path) -> None:
    for name in ("explicit", "env", "params"):
        generate_keys(tmp_path / "k", name)
    ids = {n: key_id((tmp_path / "k" / f"{n}.pub").read_bytes()) for n in ("explicit", "env", "params")}
    env = {ENV_KEY: str(tmp_path / "k" / "env.pem")}
    assert resolve_signing_key(tmp_path / "k" / "explicit.pem", env, "k/params.pem", tmp_path).key_id == ids["explicit"]
    assert resolve_signing_key(None, env, "k/params.pem", tmp_path).key_id == ids["env"]
    by_params = resolve_signing_key(None, {}, "k/params.pem", tmp_path)
    assert by_params.key_id == ids["params"] and not by_params.dev_key
    dev = resolve_signing_key(None, {}, None, tmp_path)
    assert dev.dev_key and dev.display == (DEV_KEY_DIR / "dev-signing.pem").as_posix()
    assert _mode(tmp_path / DEV_KEY_DIR / "dev-signing.pem") == 0o600
    assert (tmp_path / DEV_KEY_DIR / "dev-signing.pub").is_file()
    assert resolve_signing_key(None, {}, None, tmp_path).key_id == dev.key_id  # made once, then reused


def test_a_missing_or_wrong_key_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match=r"signing key nope.pem \(from bundle.signing_key_file\): cannot read"):
        resolve_signing_key(None, {}, "nope.pem", tmp_path)
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(SigningKeyError, match="not a PEM private key"):
        resolve_signing_key(tmp_path / "bad.pem", {}, None, tmp_path)


def test_cli_generate_takes_the_passphrase_from_the_environment(tmp_path: Path) -> None:
    done = _carryon("keys", "generate", "--out", "keys", "--name", "cr-02", "--passphrase-env", "MY_PASS", "--json",
                    cwd=tmp_path, env={"MY_PASS": "s3cret", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["encrypted"] and result["private_key"] == "keys/cr-02.pem"
    assert _mode(tmp_path / "keys" / "cr-02.pem") == 0o600
    assert load_signing_key(tmp_path / "keys" / "cr-02.pem", b"s3cret", source="t").key_id == result["key_id"]
    again = _carryon("keys", "generate", "--out", "keys", "--name", "cr-02", cwd=tmp_path,
                     env={"PYTHONPATH": str(ROOT)})
    assert again.returncode == 1 and again.stderr.startswith("carryon: error: keys/cr-02.pem: a key already exists")
    unset = _carryon("keys", "generate", "--out", "keys", "--name", "x", "--passphrase-env", "UNSET_VAR_H3",
                     cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert unset.returncode == 1 and "UNSET_VAR_H3" in unset.stderr and not (tmp_path / "keys" / "x.pem").exists()
