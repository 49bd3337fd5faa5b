"""``carryon edge decide`` and ``carryon edge serve``: the runtime's commands (stage code imported lazily).

Both run the creator's current bundle of an edge home (``--home``, default
``$CARRYON_EDGE_HOME`` or ``./.carryon-edge``, with ``--creator``) or a bundle directory
(``--bundle``). Consented decisions are logged under the home's ``decisions/``; with
``--bundle`` only when ``--home`` is given too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edge._cli_common import fail

if TYPE_CHECKING:
    from edge.decisions import DecisionLog
    from edge.runtime import EdgeRuntime

HomeOpt = Annotated[Path | None, typer.Option(
    help="Edge home [default: $CARRYON_EDGE_HOME or ./.carryon-edge].")]
CreatorOpt = Annotated[str | None, typer.Option(help="Creator whose current bundle to run (with the home).")]
BundleOpt = Annotated[Path | None, typer.Option(help="Run this bundle directory instead of a home's current one.")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed of the exploration draws [default: fresh entropy].")]
NoLogOpt = Annotated[bool, typer.Option("--no-log", help="Do not append decisions to the decision log.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _open(home: Path | None, creator: str | None, bundle: Path | None, seed: int | None,
          no_log: bool) -> tuple[EdgeRuntime, DecisionLog | None, Path | None]:
    """The runtime, its decision log (None: no log) and the home it was installed in (None with --bundle)."""
    from edge.decisions import DecisionLog
    from edge.home import resolve_home
    from edge.runtime import EdgeRuntime, bundle_for

    if bundle is not None and creator is not None:
        raise fail("give either --bundle DIR or --creator ID (with --home), not both")
    installed_in: Path | None = None
    if bundle is None:
        if creator is None:
            raise fail("say which bundle to run: --creator ID (current bundle of --home) or --bundle DIR")
        home = installed_in = resolve_home(home).root
        bundle = bundle_for(home, creator)
    runtime = EdgeRuntime.load(bundle, seed=seed)
    log = None if no_log or home is None else DecisionLog.open(home, runtime.creator_id)
    return runtime, log, installed_in


def _read_session(source: str) -> Any:
    from edge.runtime import SessionError
    from features.errors import InputUnreadableError

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputUnreadableError(f"{source}: cannot read the session ({getattr(e, 'strerror', None) or e})") from e
    try:
        return json.loads(text)
    except ValueError as e:
        raise SessionError(f"{source}: not a JSON session ({e})") from e


def _human(result: dict[str, Any]) -> str:
    cta, bonuses = result["cta"], result["bonuses"]
    how = "personalized" if result["personalized"] else f"defaults: {result['reason'].replace('_', ' ')}"
    top = ", ".join(bonuses["order"][:3])
    return (f"{result['creator_id']} bundle v{result['bundle_version']}: show {cta['variant']} "
            f"(propensity {cta['propensity']:.3f}); bonuses {top}, ... ({how})")


def register(app: typer.Typer) -> None:
    """Add ``decide`` and ``serve`` to the ``carryon edge`` app."""

    @app.command()
    def decide(
        session: Annotated[str, typer.Argument(help="Session JSON file, or - for stdin.")],
        home: HomeOpt = None, creator: CreatorOpt = None, bundle: BundleOpt = None, seed: SeedOpt = None,
        no_log: NoLogOpt = False, as_json: JsonOpt = False,
    ) -> None:
        """Decide once for a session read from a file: CTA variant with propensity, bonus order."""
        from features.errors import CarryonError

        try:
            runtime, log, _ = _open(home, creator, bundle, seed, no_log)
            decision = runtime.decide(_read_session(session))
            if log is not None:
                log.append(decision)
        except CarryonError as e:
            raise fail(str(e)) from None
        result = decision.to_dict(runtime.variants)
        typer.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else _human(result))

    @app.command()
    def serve(
        home: HomeOpt = None, creator: CreatorOpt = None, bundle: BundleOpt = None, seed: SeedOpt = None,
        no_log: NoLogOpt = False,
        host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port (0: any free port, printed on start).")] = 8765,
        max_body: Annotated[int, typer.Option(help="Largest request body in bytes (413 above).")] = 64 * 1024,
        reload_every: Annotated[float, typer.Option(
            min=0.0, help="Seconds between checks of the home's current bundle; a newly pulled one (kill switch "
                          "included) takes over without a restart. 0: never. Not with --bundle.")] = 2.0,
    ) -> None:
        """Serve decide over local HTTP: POST /decide, GET /health."""
        from edge.live import LiveRuntime
        from edge.serve import listen, make_app
        from edge.serve import serve as run_server
        from features.errors import CarryonError

        try:
            runtime, log, installed_in = _open(home, creator, bundle, seed, no_log)
            sock = listen(host, port)
        except CarryonError as e:
            raise fail(str(e)) from None
        served: EdgeRuntime | LiveRuntime = runtime
        follows = "fixed bundle"
        if installed_in is not None and creator is not None and reload_every > 0:
            served = LiveRuntime(installed_in, creator, runtime, interval_s=reload_every, seed=seed)
            follows = f"follows current/{creator} every {reload_every:g} s"
        bound = sock.getsockname()
        where = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
        typer.echo(f"serving {runtime.creator_id} bundle v{runtime.bundle_version} on http://{where}:{bound[1]}"
                   f" (decision log: {'off' if log is None else log.path}; {follows})")
        sys.stdout.flush()
        run_server(make_app(served, log, max_body=max_body), sock)
