"""Ingest of Parquet input: the same contract as JSONL, through vectorized casts.

The same events as JSONL and as Parquet give byte-identical clean files; Parquet
columns of the wrong dtype, missing columns, naive timestamps and extra columns
behave like the corresponding JSON fields; bad rows reach the quarantine as objects.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from test_ingest_support import generate_raw, read_clean, read_quarantine, run, to_jsonl


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_jsonl_and_parquet_of_the_same_events_give_identical_clean_files(tmp_path: Path) -> None:
    raw = generate_raw(3_000, seed=5, granted=0.7)
    parquet, jsonl = tmp_path / "raw.parquet", tmp_path / "raw.jsonl"
    raw.write_parquet(parquet)
    to_jsonl(raw, jsonl)
    from_parquet = run(tmp_path, [parquet], name="p")
    from_jsonl = run(tmp_path, [jsonl], name="j")
    assert from_parquet.clean > 0
    assert from_parquet.excluded_no_consent > 0
    a, b = from_parquet.to_dict(), from_jsonl.to_dict()
    for report in (a, b):
        report.pop("inputs")
        report.pop("seconds")
    assert a == b
    assert _files(tmp_path / "p") == _files(tmp_path / "j")


def test_string_timestamps_and_categorical_columns_are_read(tmp_path: Path) -> None:
    raw = generate_raw(500, seed=2, granted=1.0)
    as_text = raw.with_columns(
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00"),
        pl.col("type", "creator_id").cast(pl.Categorical),
    )
    raw.write_parquet(tmp_path / "a.parquet")
    as_text.write_parquet(tmp_path / "b.parquet")
    run(tmp_path, [tmp_path / "a.parquet"], name="a")
    report = run(tmp_path, [tmp_path / "b.parquet"], name="b")
    assert report.quarantined == 0
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_missing_column_is_a_missing_field_for_the_types_that_need_it(tmp_path: Path) -> None:
    raw = generate_raw(1_000, seed=3, granted=1.0)
    raw.drop("amount").write_parquet(tmp_path / "raw.parquet")
    report = run(tmp_path, [tmp_path / "raw.parquet"])
    enrolls = raw.filter(pl.col("type") == "enroll").height
    assert enrolls > 0
    assert report.quarantine_reasons == {"missing_field:amount": enrolls}
    assert report.clean == raw.height - enrolls


def test_column_of_the_wrong_dtype_is_a_wrong_type(tmp_path: Path) -> None:
    raw = generate_raw(1_000, seed=4, granted=1.0)
    raw.with_columns(pl.col("propensity").cast(pl.String)).write_parquet(tmp_path / "raw.parquet")
    report = run(tmp_path, [tmp_path / "raw.parquet"])
    carriers = raw.filter(pl.col("propensity").is_not_null()).height
    assert report.quarantine_reasons == {"wrong_type:propensity": carriers}
    entry = read_quarantine(tmp_path / "clean-quarantine.jsonl")[0]
    assert "'propensity'" in entry["detail"]
    assert isinstance(entry["raw"], dict)
    assert isinstance(entry["raw"]["propensity"], str)


def test_naive_timestamps_are_bad_timestamps(tmp_path: Path) -> None:
    raw = generate_raw(200, seed=6, granted=1.0)
    raw.with_columns(pl.col("ts").dt.replace_time_zone(None)).write_parquet(tmp_path / "raw.parquet")
    report = run(tmp_path, [tmp_path / "raw.parquet"])
    assert report.quarantine_reasons == {"bad_timestamp": raw.height}
    assert report.clean == 0


def test_float_positions_with_nulls_are_read_like_pandas_writes_them(tmp_path: Path) -> None:
    raw = generate_raw(800, seed=7, granted=1.0)
    raw.with_columns(pl.col("position").cast(pl.Float64)).write_parquet(tmp_path / "raw.parquet")
    report = run(tmp_path, [tmp_path / "raw.parquet"])
    assert (report.quarantined, report.clean) == (0, raw.height)
    clean = read_clean(tmp_path / "clean")
    assert clean.schema["position"] == pl.Int32
    assert sorted(clean["position"].drop_nulls().unique().to_list()) == [1, 2, 3]


def test_extra_columns_are_ignored_and_counted(tmp_path: Path) -> None:
    raw = generate_raw(300, seed=8, granted=1.0)
    extra = pl.Series("note", ["x" if i % 3 == 0 else None for i in range(raw.height)])
    raw.with_columns(extra).write_parquet(tmp_path / "raw.parquet")
    report = run(tmp_path, [tmp_path / "raw.parquet"])
    assert report.extra_fields_ignored == extra.is_not_null().sum()
    assert "note" not in read_clean(tmp_path / "clean").columns


def test_bad_parquet_rows_are_quarantined_as_objects_with_row_numbers(tmp_path: Path) -> None:
    raw = generate_raw(100, seed=9, granted=1.0)
    bad_row = 37
    raw = raw.with_columns(
        pl.when(pl.int_range(pl.len()) == bad_row - 1).then(pl.lit(-2.0)).otherwise(pl.col("amount")).alias("amount"),
        pl.when(pl.int_range(pl.len()) == bad_row - 1).then(pl.lit("enroll")).otherwise(pl.col("type")).alias("type"),
    )
    raw.write_parquet(tmp_path / "raw.parquet")
    report = run(tmp_path, [tmp_path / "raw.parquet"])
    assert report.quarantine_reasons == {"negative_amount": 1}
    [entry] = read_quarantine(tmp_path / "clean-quarantine.jsonl")
    assert (entry["source"], entry["record"], entry["reason"]) == ("raw.parquet", bad_row, "negative_amount")
    expected = raw.row(bad_row - 1, named=True)
    assert entry["raw"]["event_id"] == expected["event_id"]
    assert entry["raw"]["amount"] == -2.0
    assert entry["raw"]["ts"] == expected["ts"].isoformat()
    assert set(entry["raw"]) == set(raw.columns)


def test_conflict_across_jsonl_and_parquet_keeps_the_first_file(tmp_path: Path) -> None:
    raw = generate_raw(200, seed=10, granted=1.0)
    raw.write_parquet(tmp_path / "a.parquet")
    changed = raw.head(3).with_columns(pl.lit("c9").alias("creator_id"))
    to_jsonl(pl.concat([changed, raw.slice(3, 2)]), tmp_path / "b.jsonl")
    report = run(tmp_path, [tmp_path / "a.parquet", tmp_path / "b.jsonl"])
    assert report.quarantine_reasons == {"event_id_conflict": 3}
    assert report.duplicates == 2
    assert report.clean == raw.height
    entries = read_quarantine(tmp_path / "clean-quarantine.jsonl")
    assert {e["source"] for e in entries} == {"b.jsonl"}
    assert all("a.parquet record" in e["detail"] and "creator_id" in e["detail"] for e in entries)
