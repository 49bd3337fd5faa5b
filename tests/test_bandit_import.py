"""Logged-bandit import: counts, consent, pseudonyms, quarantine reasons, formats, refusals."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from features.bandit import LOG_FILE, SPEC_FILE, BanditImportReport, BanditSpec, import_bandit_log
from features.errors import ConfigError, DataError, InputUnreadableError
from features.ingest import Pseudonymizer, PseudonymKey
from tests.data.bandit import make_example

EXAMPLE = Path(__file__).parent / "data" / "bandit" / "example.csv"
KEY = PseudonymKey(hashlib.sha256(b"carryon bandit tests").digest(), "env")
HEADER = ("timestamp", "session_key", "ctx_device", "ctx_minute", "action", "position", "reward", "propensity")
GOOD = {"timestamp": "2026-08-03T17:00:00Z", "session_key": "user-1", "ctx_device": "phone", "ctx_minute": "3",
        "action": "plain", "position": "1", "reward": "1", "propensity": "0.25"}


def write_csv(path: Path, rows: list[dict[str, str | None]], header: tuple[str, ...] = HEADER) -> Path:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if r.get(c) is None else r[c] for c in header] for r in rows])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def run(tmp_path: Path, source: Path, *, column: str | None = None, basis: str | None = "contract: ToS 4.2",
        **kwargs: Any) -> BanditImportReport:
    return import_bandit_log(source, tmp_path / "bandit", tmp_path / "raw" / "quarantine.jsonl", key=KEY,
                             consent_column=column, consent_basis=None if column else basis, **kwargs)


def quarantine(tmp_path: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp_path / "raw" / "quarantine.jsonl")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON lines split on "\\n" only: values may hold other line breaks (U+0085, U+2028)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def example_rows() -> list[dict[str, str]]:
    with EXAMPLE.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# --- the example file ----------------------------------------------------------------------------


def test_example_file_is_what_its_script_makes() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == make_example.render()


def test_example_import_counts_consent_and_encoding(tmp_path: Path) -> None:
    rows = example_rows()
    refused = [r for r in rows if r["consented"] == "false"]
    assert 0 < len(refused) < len(rows)
    report = run(tmp_path, EXAMPLE, column="consented")
    assert report.records_read == len(rows)
    assert report.excluded_no_consent == len(refused)
    assert report.excluded_reasons == {"no_consent": len(refused), "consent_missing": 0}
    assert report.quarantined == 0 and quarantine(tmp_path) == []
    assert report.clean == len(rows) - len(refused)
    assert report.ignored_columns == ("campaign",)
    assert report.actions == ("discount", "plain", "scarcity", "social_proof")
    assert report.consent.kind == "column" and report.consent.column == "consented"

    log = pl.read_parquet(tmp_path / "bandit" / LOG_FILE)
    spec = BanditSpec.load(tmp_path / "bandit" / SPEC_FILE)
    assert log.height == report.clean
    assert log.columns == ["session_key", "ts", "action", "action_index", "position", "reward", "propensity",
                           "ctx_device", "ctx_minute_in_drop", "ctx_returning"]
    assert {log.schema[c] for c in spec.context_names} == {pl.Float32}
    assert log.schema["ts"] == pl.Datetime("us", "UTC")
    assert spec.hash == report.spec_hash and spec.consent == report.consent
    assert spec.context_names == ("ctx_device", "ctx_minute_in_drop", "ctx_returning")
    device = spec.context[0]
    assert device.categories == ("unknown", "desktop", "phone", "tv")
    # Category codes and action indices agree with the spec; missing minutes take the recorded default.
    kept = [r for r in rows if r["consented"] != "false"]
    assert sorted(log.get_column("ctx_device").to_list()) == sorted(device.encode(r["ctx_device"]) for r in kept)
    missing = sum(r["ctx_minute_in_drop"] == "" for r in kept)
    assert missing > 0 and spec.stats["ctx_minute_in_drop"]["filled_with_default"] == missing
    minutes = log.get_column("ctx_minute_in_drop")
    assert (minutes == spec.context[1].default).sum() >= missing and not minutes.is_nan().any()
    index = log.select(pl.col("action").replace_strict(dict(zip(spec.actions, range(4), strict=True)))).to_series()
    assert (index == log.get_column("action_index")).all()
    # Rows are the consented ones, in time order, with times in UTC.
    assert log.get_column("ts").is_sorted()
    assert sorted(log.get_column("reward").to_list()) == sorted(float(r["reward"]) for r in kept)


def test_session_keys_are_replaced_by_the_ingest_pseudonym(tmp_path: Path) -> None:
    rows = example_rows()
    run(tmp_path, EXAMPLE, column="consented")
    log = pl.read_parquet(tmp_path / "bandit" / LOG_FILE)
    raw_keys = {r["session_key"] for r in rows}
    expected = {Pseudonymizer(KEY).one(r["session_key"]) for r in rows if r["consented"] != "false"}
    assert set(log.get_column("session_key").to_list()) == expected
    # No raw key anywhere outside the raw zone: not in any column, not in the spec.
    values = {str(v) for c in log.columns for v in log.get_column(c).to_list()}
    assert not any(k in v for k in raw_keys for v in values)
    spec_text = (tmp_path / "bandit" / SPEC_FILE).read_text(encoding="utf-8")
    assert "user-" not in spec_text
    for name in (LOG_FILE, SPEC_FILE):
        assert b"user-" not in (tmp_path / "bandit" / name).read_bytes()


def test_declared_basis_is_recorded_in_report_and_lineage(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "log.csv", [GOOD, {**GOOD, "session_key": "user-2"}])
    report = run(tmp_path, source, basis="  contract: platform ToS 4.2 ")
    assert report.consent.kind == "declared" and report.consent.basis == "contract: platform ToS 4.2"
    assert report.excluded_no_consent == 0 and report.clean == 2
    spec = json.loads((tmp_path / "bandit" / SPEC_FILE).read_text(encoding="utf-8"))
    assert spec["consent"] == {"kind": "declared", "column": None, "basis": "contract: platform ToS 4.2"}
    assert spec["lineage"]["source"] == "log.csv"
    assert report.to_dict()["consent"]["basis"] == "contract: platform ToS 4.2"


@pytest.mark.parametrize(
    ("column", "basis", "match"),
    [
        (None, None, r"no consent basis declared.*consent_column.*consent_basis"),
        ("consented", "contract", r"both consent_column and consent_basis"),
        (None, "   ", r"consent_basis is empty"),
        (None, "x" * 501, r"consent_basis has 501 characters"),
        ("nope", None, r"consent column 'nope' is not in the file"),
        ("reward", None, r"consent_column 'reward' names a data column"),
    ],
)
def test_consent_basis_must_be_declared(tmp_path: Path, column: str | None, basis: str | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        import_bandit_log(EXAMPLE, tmp_path / "bandit", tmp_path / "q.jsonl", key=KEY,
                          consent_column=column, consent_basis=basis)
    assert list(tmp_path.iterdir()) == []


def test_consent_values_exclude_or_quarantine(tmp_path: Path) -> None:
    header = (*HEADER, "ok")
    values = ["true", "YES", "1", " y ", "false", "no", "0", None, "maybe"]
    rows = [{**GOOD, "session_key": f"u{i}", "ok": v} for i, v in enumerate(values)]
    report = run(tmp_path, write_csv(tmp_path / "log.csv", rows, header), column="ok")
    assert (report.clean, report.excluded_no_consent, report.quarantined) == (4, 4, 1)
    assert report.excluded_reasons == {"no_consent": 3, "consent_missing": 1}
    (entry,) = quarantine(tmp_path)
    assert entry["reason"] == "bad_value:ok" and entry["raw"]["ok"] == "maybe" and entry["record"] == 10


def test_rows_without_consent_are_never_validated_or_quarantined(tmp_path: Path) -> None:
    header = (*HEADER, "ok")
    rows = [{**GOOD, "ok": "true"}, {**GOOD, "reward": "oops", "session_key": "u9", "ok": "false"}]
    report = run(tmp_path, write_csv(tmp_path / "log.csv", rows, header), column="ok")
    assert (report.clean, report.excluded_no_consent, report.quarantined) == (1, 1, 0)
    assert quarantine(tmp_path) == []


# --- bad rows ------------------------------------------------------------------------------------

BAD_ROWS = [
    ({"timestamp": None}, "missing_field:timestamp", "timestamp"),
    ({"timestamp": "yesterday"}, "bad_timestamp", "timestamp"),
    ({"timestamp": "2026-08-03T17:00:00"}, "bad_timestamp", "UTC offset"),
    ({"timestamp": "2026-13-03T17:00:00Z"}, "bad_timestamp", "timestamp"),
    ({"session_key": None}, "missing_field:session_key", "session_key"),
    ({"session_key": "s" * 129}, "string_too_long", "'session_key' has 129 characters"),
    ({"action": None}, "missing_field:action", "action"),
    ({"reward": None}, "missing_field:reward", "reward"),
    ({"reward": "clicked"}, "wrong_type:reward", "'reward' must be a finite number"),
    ({"reward": "nan"}, "bad_value:reward", "not a finite number"),
    ({"reward": "-inf"}, "bad_value:reward", "not a finite number"),
    ({"propensity": None}, "missing_field:propensity", "propensity"),
    ({"propensity": "high"}, "wrong_type:propensity", "propensity"),
    ({"propensity": "0"}, "bad_propensity", r"outside \(0, 1\]"),
    ({"propensity": "1.5"}, "bad_propensity", r"outside \(0, 1\]"),
    ({"propensity": "-0.2"}, "bad_propensity", r"outside \(0, 1\]"),
    ({"propensity": "nan"}, "bad_propensity", r"outside \(0, 1\]"),
    ({"position": "0"}, "bad_position", "positions count from 1"),
    ({"position": "2.5"}, "wrong_type:position", "integer"),
    ({"position": "first"}, "wrong_type:position", "integer"),
    ({"ctx_minute": "inf"}, "bad_value:ctx_minute", "infinite or beyond float32"),
    ({"ctx_minute": "1e39"}, "bad_value:ctx_minute", "infinite or beyond float32"),
    ({"ctx_device": "d" * 257}, "string_too_long", "'ctx_device' has 257 characters"),
]


@pytest.mark.parametrize(("change", "code", "detail"), BAD_ROWS)
def test_bad_rows_are_quarantined_with_their_reason(tmp_path: Path, change: dict[str, str | None], code: str,
                                                     detail: str) -> None:
    rows = [GOOD, {**GOOD, **change}, {**GOOD, "session_key": "user-2"}]
    report = run(tmp_path, write_csv(tmp_path / "log.csv", rows))
    assert (report.records_read, report.clean, report.quarantined) == (3, 2, 1)
    assert report.quarantine_reasons == {code: 1}
    (entry,) = quarantine(tmp_path)
    assert entry["source"] == "log.csv" and entry["record"] == 3  # line 3: the header is line 1
    assert entry["reason"] == code
    assert re.search(detail, entry["detail"]), entry["detail"]
    assert entry["raw"]["session_key"] == rows[1]["session_key"]  # the row as read, raw key and all


def test_first_failure_decides_and_nan_context_takes_the_default(tmp_path: Path) -> None:
    rows = [{**GOOD, "timestamp": "never", "reward": "x", "propensity": "2"}, GOOD,
            {**GOOD, "ctx_minute": "NaN"}, {**GOOD, "ctx_minute": None}, {**GOOD, "ctx_minute": "5"}]
    report = run(tmp_path, write_csv(tmp_path / "log.csv", rows))
    assert report.quarantine_reasons == {"bad_timestamp": 1}
    spec = BanditSpec.load(tmp_path / "bandit" / SPEC_FILE)
    minute = spec.context[1]
    assert minute.name == "ctx_minute" and minute.default == 4.0  # median of 3 and 5
    assert spec.stats["ctx_minute"]["filled_with_default"] == 2
    log = pl.read_parquet(tmp_path / "bandit" / LOG_FILE)
    assert sorted(log.get_column("ctx_minute").to_list()) == [3.0, 4.0, 4.0, 5.0]


def test_malformed_csv_rows_and_blank_lines(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "log.csv", [GOOD])
    with source.open("a", encoding="utf-8") as f:
        f.write("\n2026-08-03T17:00:00Z,user-9,phone,3\n\n")
    report = run(tmp_path, source)
    assert (report.records_read, report.clean, report.quarantined, report.blank_lines) == (2, 1, 1, 2)
    (entry,) = quarantine(tmp_path)
    assert entry["reason"] == "malformed_row" and entry["record"] == 4
    assert "row has 4 fields, the header has 8" in entry["detail"]
    assert entry["raw"] == ["2026-08-03T17:00:00Z", "user-9", "phone", "3"]


def test_parquet_types_are_checked_too(tmp_path: Path) -> None:
    from datetime import datetime

    frame = pl.DataFrame({
        "timestamp": [datetime(2026, 8, 3, 17), datetime(2026, 8, 3, 18)],  # no time zone
        "session_key": [101, 102],  # integer user ids are fine
        "action": ["a", "b"],
        "reward": [1.0, 0.0],
        "propensity": [0.5, 0.5],
    })
    good = frame.with_columns(pl.col("timestamp").dt.replace_time_zone("Europe/Berlin"))
    bad_reward = good.with_columns(pl.Series("reward", ["1", "lots"]))
    frame.write_parquet(tmp_path / "naive.parquet")
    bad_reward.write_parquet(tmp_path / "typed.parquet")
    report = run(tmp_path, tmp_path / "naive.parquet")
    assert report.quarantine_reasons == {"bad_timestamp": 2}
    report = run(tmp_path, tmp_path / "typed.parquet")
    assert report.quarantine_reasons == {"wrong_type:reward": 1} and report.clean == 1
    (entry,) = quarantine(tmp_path)
    assert entry["record"] == 2 and entry["raw"]["reward"] == "lots" and entry["raw"]["session_key"] == 102
    log = pl.read_parquet(tmp_path / "bandit" / LOG_FILE)
    assert log.get_column("ts").to_list()[0].hour == 15  # 17:00 in Berlin (CEST) is 15:00 UTC
    assert log.get_column("session_key").to_list() == [Pseudonymizer(KEY).one("101")]


# --- formats -------------------------------------------------------------------------------------


def test_csv_and_parquet_of_the_same_rows_give_the_same_output(tmp_path: Path) -> None:
    typed = pl.read_csv(EXAMPLE, schema_overrides={"session_key": pl.String})
    typed.write_parquet(tmp_path / "example.parquet")
    a = run(tmp_path / "a", EXAMPLE, column="consented")
    b = run(tmp_path / "b", tmp_path / "example.parquet", column="consented")
    assert typed.schema["reward"] == pl.Int64 and typed.schema["ctx_minute_in_drop"] == pl.Int64
    assert a.format == "csv" and b.format == "parquet"
    assert a.spec_hash == b.spec_hash
    skip = {"source", "format", "source_sha256", "seconds"}
    assert {k: v for k, v in a.to_dict().items() if k not in skip} == \
           {k: v for k, v in b.to_dict().items() if k not in skip}
    log_a = pl.read_parquet(tmp_path / "a" / "bandit" / LOG_FILE)
    log_b = pl.read_parquet(tmp_path / "b" / "bandit" / LOG_FILE)
    assert log_a.equals(log_b)
    spec_a = BanditSpec.load(tmp_path / "a" / "bandit" / SPEC_FILE)
    spec_b = BanditSpec.load(tmp_path / "b" / "bandit" / SPEC_FILE)
    assert (spec_a.context, spec_a.actions, spec_a.stats) == (spec_b.context, spec_b.actions, spec_b.stats)


def test_a_string_context_column_with_a_word_is_a_category(tmp_path: Path) -> None:
    rows = [{**GOOD, "session_key": f"u{i}", "ctx_minute": m} for i, m in enumerate(["1", "2", "late"] * 5)]
    run(tmp_path, write_csv(tmp_path / "log.csv", rows))
    spec = BanditSpec.load(tmp_path / "bandit" / SPEC_FILE)
    assert spec.context[1].dtype == "category" and spec.context[1].categories == ("unknown", "1", "2", "late")


def test_rare_values_and_session_keys_stay_out_of_the_vocabulary(tmp_path: Path) -> None:
    common = [{**GOOD, "session_key": f"u{i}", "ctx_device": "phone"} for i in range(5)]
    rare = [{**GOOD, "session_key": "u0", "ctx_device": "fridge"}] * 4  # one session only
    leaky = [{**GOOD, "session_key": f"u{i}", "ctx_device": "u3"} for i in range(5)]  # a user id as a value
    report = run(tmp_path, write_csv(tmp_path / "log.csv", common + rare + leaky))
    spec = BanditSpec.load(tmp_path / "bandit" / SPEC_FILE)
    assert spec.context[0].categories == ("unknown", "phone")
    assert report.context_columns["ctx_device"]["mapped_to_unknown"] == 9


def test_reused_spec_encodes_alike_and_quarantines_unknown_actions(tmp_path: Path) -> None:
    run(tmp_path / "first", EXAMPLE, column="consented")
    spec_path = tmp_path / "first" / "bandit" / SPEC_FILE
    first = BanditSpec.load(spec_path)
    rows = [{"timestamp": "2026-09-10T10:00:00Z", "session_key": "new-1", "ctx_device": "tv",
             "ctx_minute_in_drop": None, "ctx_returning": "1", "action": a, "reward": "0", "propensity": "0.5"}
            for a in ("plain", "brand_new")]
    header = ("timestamp", "session_key", "ctx_device", "ctx_minute_in_drop", "ctx_returning", "action", "reward",
              "propensity")
    report = run(tmp_path, write_csv(tmp_path / "new.csv", rows, header), reuse_spec=spec_path)
    assert report.reused_spec and report.spec_hash == first.hash
    assert report.quarantine_reasons == {"unknown_action": 1}
    log = pl.read_parquet(tmp_path / "bandit" / LOG_FILE)
    assert log.row(0, named=True)["ctx_device"] == 3.0  # "tv" keeps its code from the first import
    assert log.row(0, named=True)["ctx_minute_in_drop"] == first.context[1].default
    assert log.row(0, named=True)["action_index"] == first.actions.index("plain")
    with pytest.raises(DataError, match="context columns"):
        run(tmp_path, write_csv(tmp_path / "other.csv", [GOOD]), reuse_spec=spec_path)


# --- unreadable input ----------------------------------------------------------------------------


def _corrupt_parquet(path: Path) -> Path:
    pl.DataFrame({"a": [1]}).write_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[:4] + b"\0" * 8 + data[12:])
    return path


def _file(name: str, content: bytes) -> Any:
    def make(directory: Path) -> Path:
        (directory / name).write_bytes(content)
        return directory / name
    return make


UNREADABLE = [
    (lambda p: p / "missing.csv", InputUnreadableError, "cannot read it"),
    (lambda p: (p / "dir.csv").mkdir() or p / "dir.csv", InputUnreadableError, "is a directory"),
    (_file("log.txt", b"a,b\n"), InputUnreadableError, "unsupported input"),
    (_file("empty.csv", b""), InputUnreadableError, "empty"),
    (_file("header.csv", ",".join(HEADER).encode() + b"\n"), InputUnreadableError, "holds no records"),
    (_file("latin.csv", b"timestamp\n\xe9\n"), InputUnreadableError, "not UTF-8"),
    (_file("fake.parquet", b"timestamp\n"), InputUnreadableError, "not a Parquet file"),
    (lambda p: _corrupt_parquet(p / "bad.parquet"), InputUnreadableError, "cannot read it as Parquet"),
    (_file("cols.csv", b"timestamp,action\nx,y\n"), DataError,
     r"required column\(s\) session_key, reward, propensity missing"),
    (_file("dup.csv", b"action,action\nx,y\n"), DataError, "appears twice"),
    (_file("ctx.csv", b"timestamp,session_key,action,reward,propensity,ctx_\nx,y,z,1,1,2\n"), DataError,
     "named just 'ctx_'"),
]


@pytest.mark.parametrize(("make", "error", "match"), UNREADABLE)
def test_unreadable_input_is_one_clear_error_and_nothing_is_written(
        tmp_path: Path, make: Any, error: type[Exception], match: str) -> None:
    source = make(tmp_path)
    out = tmp_path / "out"
    (out / "bandit").mkdir(parents=True)
    (out / "bandit" / "previous.txt").write_text("kept")
    with pytest.raises(error, match=match):
        run(out, source)
    assert sorted(p.name for p in out.rglob("*")) == ["bandit", "previous.txt"]


def test_source_inside_the_output_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bandit").mkdir()
    source = write_csv(tmp_path / "bandit" / "log.csv", [GOOD])
    with pytest.raises(ConfigError, match="inside the output directory"):
        run(tmp_path, source)
    assert source.exists()


# --- property: never crash, counts add up ---------------------------------------------------------

_TEXT = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "0", "1", "0.5", "-1", "nan", "inf", "1e400", "abc", "true", "2026-08-03T17:00:00Z",
                     "2026-08-03T17:00:00", "x,y", '"q"', "é", "\n"]),
    st.text(max_size=8),
)
_VALID = {
    "timestamp": ["2026-08-03T17:00:00Z", "2026-08-03T19:00:00.5+02:00"], "session_key": ["u1", "u2", "u3"],
    "ctx_device": ["phone", "tv", None], "ctx_minute": ["1", "2.5", None, "nan"], "action": ["a", "b"],
    "position": ["1", "2", None], "reward": ["0", "1", "0.5"], "propensity": ["0.25", "1"],
    "ok": ["true", "false", None, "yes"],
}


def _mostly(valid: list[str | None]) -> st.SearchStrategy[str | None]:
    """A valid value 9 times in 10, else anything: clean, quarantined and excluded rows all come up."""
    return st.tuples(st.integers(0, 9), st.sampled_from(valid), _TEXT).map(lambda t: t[1] if t[0] < 9 else t[2])


_ROW = st.fixed_dictionaries({c: _mostly(v) for c, v in _VALID.items()})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_ROW, min_size=1, max_size=12), with_consent=st.booleans(), as_parquet=st.booleans())
def test_random_rows_never_crash_and_counts_add_up(tmp_path: Path, rows: list[dict[str, str | None]],
                                                   with_consent: bool, as_parquet: bool) -> None:
    header = (*HEADER, "ok")
    if as_parquet:
        source = tmp_path / "log.parquet"
        pl.DataFrame({c: [r[c] for r in rows] for c in header}, schema={c: pl.String for c in header}
                     ).write_parquet(source)
    else:
        source = write_csv(tmp_path / "log.csv", rows, header)
    report = import_bandit_log(source, tmp_path / "bandit", tmp_path / "q.jsonl", key=KEY,
                               consent_column="ok" if with_consent else None,
                               consent_basis=None if with_consent else "declared")
    assert report.records_read == report.clean + report.quarantined + report.excluded_no_consent
    event(f"clean rows: {'some' if report.clean else 'none'}, quarantined: {'some' if report.quarantined else 'none'}")
    entries = read_jsonl(tmp_path / "q.jsonl")
    assert len(entries) == report.quarantined and all(e["reason"] and e["detail"] for e in entries)
    log = pl.read_parquet(tmp_path / "bandit" / LOG_FILE)
    assert log.height == report.clean
    if log.height:
        assert log.get_column("propensity").is_between(0, 1, closed="right").all()
        assert log.get_column("reward").is_finite().all()
        for name in BanditSpec.load(tmp_path / "bandit" / SPEC_FILE).context_names:
            assert all(math.isfinite(v) for v in log.get_column(name).to_list())
