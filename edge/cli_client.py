"""``carryon edge init|trust|pull|status``: the edge client's commands (stage code imported lazily).

Each command works on an edge home (``--home``, default ``$CARRYON_EDGE_HOME`` or ``./.carryon-edge``). A
refusal is one line on stderr (``carryon: error: ...``) and exit status 1; ``--json`` prints the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge._cli_common import run as _run

HomeOpt = Annotated[Path | None, typer.Option(help="Edge home (default: $CARRYON_EDGE_HOME, else ./.carryon-edge).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]

trust_app = typer.Typer(help="Creator keys this node accepts.", no_args_is_help=True)


def init_command(
    root: Annotated[Path, typer.Option("--root", help="The repository's TUF root.json (obtained out of band).")],
    home: HomeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing TUF trust (a trust reset).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Bootstrap this node's TUF trust from a root.json signed by its own root keys."""

    def call() -> dict[str, Any]:
        from edge.client_errors import TrustError
        from edge.home import resolve_home
        from edge.tuf_store import bootstrap_root

        node = resolve_home(home)
        if (node.tuf / "root.json").exists() and not force:
            raise TrustError(f"{node.root} already trusts a TUF root; root rotation happens on pull "
                             "(pass --force only to reset trust)")
        if force and node.tuf.exists():
            import shutil

            shutil.rmtree(node.tuf)
        return {"home": str(node.root), **bootstrap_root(node.tuf, root)}

    _run(call, as_json, lambda r: f"trusting TUF root version {r['root_version']} (expires {r['expires']}) "
                                  f"in {r['home']}")


@trust_app.command("add")
def trust_add(
    key: Annotated[Path, typer.Argument(help="The creator's public key (PEM, .pub).")],
    creator: Annotated[str | None, typer.Option(help="Accept this key for this creator only.")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Accept bundles signed by KEY."""

    def call() -> dict[str, Any]:
        from edge.home import resolve_home
        from edge.trust import add_key

        return add_key(resolve_home(home), key, creator)

    _run(call, as_json, lambda r: f"trusting key {r['key_id']} for {r.get('creator') or 'any creator'}")


@trust_app.command("revoke")
def trust_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id to refuse from now on (see `trust list`).")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Refuse bundles signed by KEY_ID from now on."""

    def call() -> dict[str, Any]:
        from edge.home import resolve_home
        from edge.trust import revoke_key

        return revoke_key(resolve_home(home), key_id)

    _run(call, as_json, lambda r: f"revoked key {r['key_id']}" + ("" if r["was_trusted"] else " (was not trusted)"))


@trust_app.command("list")
def trust_list(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show the trusted and the revoked creator keys."""

    def call() -> dict[str, Any]:
        from edge.home import resolve_home
        from edge.trust import load_trust

        trust = load_trust(resolve_home(home))
        keys = {k: {f: v for f, v in e.items() if f != "public_key_pem"} for k, e in sorted(trust["keys"].items())}
        return {"keys": keys, "revoked": sorted(trust["revoked"])}

    def human(r: dict[str, Any]) -> str:
        lines = [f"{k}  {e.get('creator') or 'any creator'}  added {e.get('added_at')}"
                 + ("  REVOKED" if k in r["revoked"] else "") for k, e in r["keys"].items()]
        lines += [f"{k}  revoked" for k in r["revoked"] if k not in r["keys"]]
        return "\n".join(lines) or "no keys trusted"

    _run(call, as_json, human)


def pull_command(
    repo: Annotated[str, typer.Option("--repo", help="Base URL of the TUF repository (holds metadata/, targets/).")],
    creator: Annotated[str, typer.Option("--creator", help="Creator whose newest bundle to install.")],
    mirror: Annotated[list[str] | None, typer.Option("--mirror", help="Mirror base URL, tried in order.")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Refresh TUF metadata and install the creator's newest verified bundle (the old one stays on any failure)."""

    def call() -> dict[str, Any]:
        from edge.home import resolve_home
        from edge.pull import PullOptions, pull

        return pull(resolve_home(home), creator, PullOptions(repo=repo, mirrors=tuple(mirror or ())))

    def human(r: dict[str, Any]) -> str:
        if r["status"] == "up-to-date":
            line = f"{r['creator']}: version {r['version']} is installed and current"
        else:
            was = "nothing" if r["previous_version"] is None else f"version {r['previous_version']}"
            line = f"{r['creator']}: installed version {r['version']} (was {was})"
        notes = [f"mirror failed: {f}" for f in r.get("mirror_failures", [])]
        notes += [f"revoked by the repository: {k}" for k in r.get("revoked_new", [])]
        if r.get("resumed_bytes"):
            notes.append(f"resumed a download at byte {r['resumed_bytes']}")
        return "\n".join([line, *notes])

    _run(call, as_json, human)


def status_command(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Installed creators, versions, ages, last refresh and error, staleness; trusted and revoked keys."""

    def call() -> dict[str, Any]:
        from edge.home import resolve_home
        from edge.status import node_status

        return node_status(resolve_home(home))

    def human(r: dict[str, Any]) -> str:
        from edge.status import render

        return render(r)

    _run(call, as_json, human)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app`` (the ``carryon edge`` sub-app)."""
    app.command("init")(init_command)
    app.command("pull")(pull_command)
    app.command("status")(status_command)
    app.add_typer(trust_app, name="trust")
