"""The TUF client under test for tuf-conformance (its CLIENT-CLI.md protocol), on the edge client's own parts.

    python -m edge.conformance --metadata-dir DIR init ROOT_FILE
    python -m edge.conformance --metadata-dir DIR --metadata-url URL refresh
    python -m edge.conformance --metadata-dir DIR --metadata-url URL --target-name NAME \
        --target-base-url URL --target-dir DIR download

Exit status 0 on success, 1 on any failure (one line on stderr). Metadata is kept with non-versioned names and
written crash-safe (``edge.tuf_store.SafeUpdater``); HTTP goes through ``edge.fetch.MirrorFetcher``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.ngclient.config import UpdaterConfig

from edge.fetch import MirrorFetcher
from edge.tuf_store import SafeUpdater, open_updater
from features._fsutil import atomic_write_bytes
from features.errors import CarryonError

__all__ = ["main"]


def _updater(args: argparse.Namespace, target_dir: str | None = None,
             target_base_url: str | None = None) -> SafeUpdater:
    if not args.metadata_url:
        raise ValueError("--metadata-url is required for this command")
    now = datetime.now(UTC) + timedelta(days=args.days_in_future) if args.days_in_future else None
    config = UpdaterConfig(max_root_rotations=args.max_root_rotations)
    return open_updater(Path(args.metadata_dir), args.metadata_url, MirrorFetcher([args.metadata_url]), config, now,
                        target_dir=target_dir, target_base_url=target_base_url)


def _init(args: argparse.Namespace) -> None:
    # The protocol asks for no checks and no requests here: the first refresh verifies the root.
    atomic_write_bytes(Path(args.metadata_dir) / "root.json", Path(args.trusted_root).read_bytes())


def _download(args: argparse.Namespace) -> None:
    if not (args.target_name and args.target_base_url and args.target_dir):
        raise ValueError("download needs --target-name, --target-base-url and --target-dir")
    Path(args.target_dir).mkdir(parents=True, exist_ok=True)
    updater = _updater(args, args.target_dir, args.target_base_url)
    info = updater.get_targetinfo(args.target_name)
    if info is None:
        raise ValueError(f"target {args.target_name} is not in the trusted metadata")
    if updater.find_cached_target(info) is None:
        updater.download_target(info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.conformance", description=__doc__.splitlines()[0])
    parser.add_argument("--metadata-dir", required=True)
    parser.add_argument("--metadata-url")
    parser.add_argument("--target-name")
    parser.add_argument("--target-base-url")
    parser.add_argument("--target-dir")
    parser.add_argument("--days-in-future", type=int, default=0)
    parser.add_argument("--max-root-rotations", type=int, default=32)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init").add_argument("trusted_root")
    commands.add_parser("refresh")
    commands.add_parser("download")
    args = parser.parse_args(argv)
    try:
        if args.command == "init":
            _init(args)
        elif args.command == "refresh":
            _updater(args).refresh()
        else:
            _download(args)
    except (CarryonError, tuf_errors.RepositoryError, tuf_errors.DownloadError, OSError, ValueError) as e:
        print(f"edge.conformance: {args.command} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
