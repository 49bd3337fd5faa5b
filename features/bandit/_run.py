"""The bandit import end to end: declare consent, read, stage, judge, encode, pseudonymize, write.

Everything is read and decided in memory first; only then are ``out_dir`` (replaced
whole) and the quarantine written, each atomically. A source that cannot be read, a
layout the format does not allow, or an undeclared consent basis raises before
anything on disk changes.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import polars as pl

from features._fsutil import atomic_dir, atomic_file, atomic_write_text
from features.bandit import _quarantine
from features.bandit._encode import encode
from features.bandit._report import BanditImportReport
from features.bandit._source import read_table
from features.bandit._spec import LOG_FILE, SPEC_FILE, BanditSpec, ConsentBasis
from features.bandit._stage import layout, stage
from features.bandit._validate import EXCLUDED_REASONS, STATE, judge
from features.errors import ConfigError
from features.ingest import Pseudonymizer, PseudonymKey
from features.ingest._columns import UTC_US

MAX_BASIS_CHARS = 500
_DECLARE = ("declare the log's consent basis: either consent_column (--consent-column), a column saying per "
            "row whether that person consented (rows without consent are excluded and counted), or "
            "consent_basis (--consent-basis), a text such as 'contract: platform ToS 4.2' recorded in the "
            "report and the lineage")


def declared_consent(consent_column: str | None, consent_basis: str | None) -> ConsentBasis:
    """The consent basis the caller declared; ConfigError when none or both are given."""
    if consent_column is not None and consent_basis is not None:
        raise ConfigError(f"both consent_column and consent_basis given; pass exactly one: {_DECLARE}")
    if consent_column is not None:
        if not consent_column.strip():
            raise ConfigError(f"consent_column is empty; {_DECLARE}")
        return ConsentBasis("column", column=consent_column)
    if consent_basis is not None:
        basis = consent_basis.strip()
        if not basis:
            raise ConfigError(f"consent_basis is empty; {_DECLARE}")
        if len(basis) > MAX_BASIS_CHARS:
            raise ConfigError(f"consent_basis has {len(basis)} characters, over {MAX_BASIS_CHARS}; "
                              "cite the basis (document, section) rather than its text")
        return ConsentBasis("declared", basis=basis)
    raise ConfigError(f"no consent basis declared for the bandit log; {_DECLARE}")


def run(source: Path, out_dir: Path, quarantine_path: Path, *, key: PseudonymKey, consent_column: str | None,
        consent_basis: str | None, reuse_spec: Path | None) -> BanditImportReport:
    started = time.perf_counter()
    consent = declared_consent(consent_column, consent_basis)
    _check_paths(source, out_dir, quarantine_path)
    reuse = BanditSpec.load(reuse_spec) if reuse_spec is not None else None
    table = read_table(source)
    lay = layout(table, consent.column, reuse)
    judged, rules = judge(stage(table, lay), lay, reuse.actions if reuse is not None else None)
    states = judged.get_column(STATE)
    clean = judged.filter(states == "clean")
    encoding = encode(clean, lay, judged.get_column("session_key").drop_nulls(), table.name, reuse)
    entries = _quarantine.collect(table, judged, rules, consent.column)

    raw_sessions = clean.get_column("session_key").unique(maintain_order=True)
    keys = pl.DataFrame({"session_key": raw_sessions,
                         "_pseudonym": Pseudonymizer(key).many(raw_sessions.to_list())}, schema_overrides={
                             "session_key": pl.String, "_pseudonym": pl.String})
    actions = pl.DataFrame({"action": list(encoding.actions), "action_index": range(len(encoding.actions))},
                           schema={"action": pl.String, "action_index": pl.Int32})
    log = (
        pl.concat([clean.select("session_key", "timestamp", "action", "position", "reward", "propensity"),
                   pl.DataFrame(encoding.columns, schema={s.name: pl.Float32 for s in encoding.columns})],
                  how="horizontal")
        .join(keys, on="session_key", how="left", maintain_order="left")
        .join(actions, on="action", how="left", maintain_order="left")
        .select(
            pl.col("_pseudonym").alias("session_key"),
            pl.col("timestamp").cast(UTC_US).alias("ts"),
            pl.col("action").cast(pl.String),
            pl.col("action_index").cast(pl.Int32),
            pl.col("position").cast(pl.Int32),
            pl.col("reward").cast(pl.Float64),
            pl.col("propensity").cast(pl.Float64),
            *(pl.col(name).cast(pl.Float32) for name, _ in lay.context),
        )
        .sort("ts", "session_key", maintain_order=True)
    )
    counts = Counter(states.to_list())
    reasons = dict(sorted(Counter(e.reason for e in entries).items()))
    spec = BanditSpec(
        context=encoding.context,
        actions=encoding.actions,
        consent=consent,
        lineage={"source": table.name, "format": table.format, "source_sha256": table.sha256,
                 "pseudonym_key_id": key.key_id, "rows": log.height, "sessions": keys.height,
                 "reused_spec": reuse_spec.name if reuse_spec is not None else None},
        stats=encoding.stats,
    )
    report = BanditImportReport(
        source=table.name,
        format=table.format,
        source_sha256=table.sha256,
        records_read=table.records,
        clean=log.height,
        quarantined=len(entries),
        excluded_no_consent=sum(counts[r] for r in EXCLUDED_REASONS),
        quarantine_reasons=reasons,
        excluded_reasons={r: counts[r] for r in EXCLUDED_REASONS},
        blank_lines=table.blank_lines,
        consent=consent,
        context_columns={f.name: _describe(f.dtype, f.default, f.categories, encoding.stats[f.name])
                         for f in encoding.context},
        ignored_columns=lay.ignored,
        actions=encoding.actions,
        sessions=keys.height,
        spec_hash=spec.hash,
        reused_spec=reuse is not None,
        pseudonym_key_source=key.source,
        pseudonym_key_id=key.key_id,
        seconds=time.perf_counter() - started,
    )
    with atomic_dir(out_dir) as tmp_out, atomic_file(quarantine_path) as tmp_quarantine:
        _quarantine.write(tmp_quarantine, table.name, entries)
        log.write_parquet(tmp_out / LOG_FILE, compression="zstd", statistics=True)
        atomic_write_text(tmp_out / SPEC_FILE, spec.to_json())
    return report


def _describe(dtype: str, default: float, categories: tuple[str, ...], stats: dict[str, object]) -> dict[str, object]:
    if dtype == "category":
        return {**stats, "vocabulary": len(categories) - 1}
    return {**stats, "default": default}


def _check_paths(source: Path, out_dir: Path, quarantine_path: Path) -> None:
    src, out, quarantine = source.resolve(), out_dir.resolve(), quarantine_path.resolve()
    if out == src or out in src.parents:
        raise ConfigError(f"{source}: the source lies inside the output directory {out_dir}, which the import "
                          "replaces whole; write the output elsewhere")
    if quarantine == src:
        raise ConfigError(f"{quarantine_path}: the quarantine path is the source itself; choose another file")
    if out == quarantine or out in quarantine.parents:
        raise ConfigError(f"{quarantine_path}: the quarantine lies inside the output directory {out_dir}; keep it "
                          "in the raw zone, outside the clean outputs")
