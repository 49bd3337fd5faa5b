"""Batch features: exact values on hand-built sessions, label windows, relevance grades,
defaults, history, errors that write nothing, no viewer id in any output, determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from eventgen import (
    KINDS,
    SEC,
    STYLES,
    T0_US,
    generate_events,
    make_catalog,
    partition_of,
    rows_to_events,
    write_clean,
    write_dataset,
)

from features.batch import FeatureSummary, build_features
from features.config import FeatureConfig
from features.errors import DataError, InputUnreadableError
from features.spec import FeatureSpec

WINDOW_S = 120.0
CONFIG = FeatureConfig(label_window_s=WINDOW_S)
CATALOG = make_catalog(2)
DROP_START = T0_US


def ev(kind: str, at_s: float, session: str = "s1", viewer: str = "v1", creator: str = "c00",
       **fields: Any) -> dict[str, Any]:
    """One clean event of ``session`` at ``T0 + at_s`` seconds."""
    return {"type": kind, "ts": T0_US + round(at_s * SEC), "session_key": session,
            "viewer_key": viewer, "creator_id": creator, "drop_id": f"{creator}-{session}", **fields}


def join(at_s: float, **fields: Any) -> dict[str, Any]:
    base = {"device": "tv", "channel": "popup", "local_pickup": True, "drop_started_at": DROP_START}
    return ev("join", at_s, **{**base, **fields})


def cta(at_s: float, variant: str = "c00-v1", **fields: Any) -> dict[str, Any]:
    return ev("cta_impression", at_s, variant=variant, propensity=0.25, **fields)


def slate(at_s: float, slate_id: str, bonuses: tuple[str, ...], **fields: Any) -> list[dict[str, Any]]:
    return [ev("bonus_impression", at_s, slate_id=slate_id, bonus_id=b, position=i + 1,
               propensity=0.5, **fields) for i, b in enumerate(bonuses)]


def build(tmp_path: Path, rows: list[dict[str, Any]], partitions: int = 2,
          catalog: dict[str, Any] | None = None) -> tuple[pl.DataFrame, pl.DataFrame, FeatureSummary]:
    clean, catalog_path = write_dataset(tmp_path, rows_to_events(rows), catalog or CATALOG, partitions)
    summary = build_features(clean, catalog_path, tmp_path / "features", CONFIG)
    out = tmp_path / "features"
    return pl.read_parquet(out / "cta.parquet"), pl.read_parquet(out / "bonus.parquet"), summary


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    """The spec the batch engine must build for CATALOG (checked in the first test)."""
    return FeatureSpec.build({c["niche"] for c in CATALOG["creators"]}, STYLES, KINDS, WINDOW_S)


def f32(x: float) -> float:
    return float(np.float32(x))


def row_of(frame: pl.DataFrame, **keys: Any) -> dict[str, Any]:
    hit = frame.filter(*(pl.col(k) == v for k, v in keys.items()))
    assert hit.height == 1, f"{keys}: {hit.height} rows"
    return hit.row(0, named=True)


def test_context_values_follow_the_definitions(tmp_path: Path, spec: FeatureSpec) -> None:
    rows = [
        join(10),
        ev("chat", 20), ev("reaction", 25), ev("chat", 30),
        cta(40, event_id="imp-a"), ev("chat", 40), ev("reaction", 40),  # same instant as imp-a
        *slate(50, "sl1", ("c00-b01", "c00-b02", "c00-b03")),
        ev("bonus_claim", 55, slate_id="sl1", bonus_id="c00-b02"),
        ev("cta_click", 60, variant="c00-v1"),
        cta(70, variant="c00-v2", event_id="imp-b"),
    ]
    cta_rows, bonus_rows, summary = build(tmp_path, rows)
    assert FeatureSpec.load(tmp_path / "features" / "feature_spec.json") == spec
    a = row_of(cta_rows, impression_id="imp-a")
    assert {k: a[k] for k in spec.context_names} == {
        "minute_in_drop": f32(40e6 / 60e6), "secs_since_join": 30.0, "secs_since_last_chat": 10.0,
        "sess_chats": 2.0, "sess_reactions": 1.0, "sess_cta_impressions": 0.0,
        "sess_cta_clicks": 0.0, "sess_bonus_claims": 0.0, "sess_enrolls": 0.0, "sess_slates": 0.0,
        "hist_sessions": 0.0, "hist_enrolls": 0.0, "hist_claims": 0.0, "hist_cta_clicks": 0.0,
        "local_pickup": 1.0, "device": spec["device"].encode("tv"),
        "channel": spec["channel"].encode("popup"), "creator_niche": spec["creator_niche"].encode("ceramics"),
    }
    b = row_of(cta_rows, impression_id="imp-b")
    assert (b["secs_since_last_chat"], b["sess_chats"], b["sess_reactions"]) == (30.0, 3.0, 2.0)
    assert (b["sess_cta_impressions"], b["sess_cta_clicks"], b["sess_bonus_claims"]) == (1.0, 1.0, 1.0)
    assert (b["sess_slates"], b["minute_in_drop"], b["secs_since_join"]) == (1.0, f32(70 / 60), 60.0)
    assert (a["label"], a["clicked"], b["label"]) == (1, True, 0)
    variant = next(v for v in CATALOG["creators"][0]["variants"] if v["variant"] == "c00-v2")
    assert b["variant_style"] == spec["variant_style"].encode(variant["style"])
    assert b["variant_discount"] == f32(variant["discount"])
    slate_row = row_of(bonus_rows, bonus_id="c00-b02")
    assert (slate_row["sess_cta_impressions"], slate_row["sess_slates"], slate_row["sess_chats"]) == (1.0, 0.0, 3.0)
    assert (slate_row["relevance"], slate_row["claimed"], slate_row["position"]) == (1, True, 2)
    assert summary.cta_rows == 2 and summary.bonus_rows == 3 and summary.bonus_slates == 1


def test_label_window_edges(tmp_path: Path) -> None:
    w = WINDOW_S
    rows = [join(0)]
    cases = {  # impression -> (its time, follow-up events)
        "at-edge": (100, [ev("cta_click", 100 + w, variant="c00-v1", session="s-at-edge")]),
        "past-edge": (100, [ev("cta_click", 100 + w + 1e-6, variant="c00-v1", session="s-past-edge")]),
        "other-variant": (100, [ev("cta_click", 110, variant="c00-v3", session="s-other-variant")]),
        "same-instant": (100, [ev("cta_click", 100, variant="c00-v1", session="s-same-instant")]),
        "enroll-at-edge": (100, [ev("enroll", 100 + w, amount=149.0, session="s-enroll-at-edge")]),
        "enroll-past": (100, [ev("enroll", 100 + w + 1e-6, amount=149.0, session="s-enroll-past")]),
        "other-session": (100, [ev("cta_click", 110, variant="c00-v1", session="s-elsewhere")]),
    }
    for name, (at, follow) in cases.items():
        rows += [cta(at, session=f"s-{name}", event_id=name), *follow]
    cta_rows, _, summary = build(tmp_path, rows)
    got = {r["impression_id"]: (r["clicked"], r["enrolled"], r["label"]) for r in cta_rows.to_dicts()}
    assert got == {
        "at-edge": (True, False, 1), "past-edge": (False, False, 0),
        "other-variant": (False, False, 0), "same-instant": (False, False, 0),
        "enroll-at-edge": (False, True, 1), "enroll-past": (False, False, 0),
        "other-session": (False, False, 0),
    }
    assert summary.cta_label_rate == pytest.approx(2 / 7, abs=1e-6)


def test_relevance_grades(tmp_path: Path) -> None:
    bonuses = ("c00-b01", "c00-b02", "c00-b03", "c00-b04")
    rows = [
        join(0), *slate(10, "sl1", bonuses), *slate(20, "sl2", bonuses),
        ev("bonus_claim", 12, slate_id="sl1", bonus_id="c00-b01"),  # claimed only
        ev("bonus_claim", 13, slate_id="sl1", bonus_id="c00-b02"),  # claimed, picked up later
        ev("pickup_select", 14, bonus_id="c00-b02"),
        ev("pickup_select", 11, bonus_id="c00-b03"),  # pickup before the claim
        ev("bonus_claim", 15, slate_id="sl1", bonus_id="c00-b03"),
        ev("pickup_select", 16, bonus_id="c00-b04"),  # pickup, never claimed
        ev("bonus_claim", 25, slate_id="sl2", bonus_id="c00-b04"),  # a claim in the other slate
    ]
    _, bonus_rows, summary = build(tmp_path, rows)
    got = {(r["slate_id"], r["bonus_id"]): (r["claimed"], r["picked_up"], r["relevance"])
           for r in bonus_rows.to_dicts()}
    assert got[("sl1", "c00-b01")] == (True, False, 1)
    assert got[("sl1", "c00-b02")] == (True, True, 2)
    assert got[("sl1", "c00-b03")] == (True, False, 1)
    assert got[("sl1", "c00-b04")] == (False, False, 0)
    assert got[("sl2", "c00-b04")] == (True, False, 1)  # its pickup (16 s) came before the claim
    assert got[("sl2", "c00-b01")] == (False, False, 0)
    assert summary.relevance == {"0": 4, "1": 3, "2": 1}
    assert bonus_rows.filter(pl.col("slate_id") == "sl2")["sess_slates"].unique().to_list() == [1.0]
    assert bonus_rows.filter(pl.col("slate_id") == "sl2")["sess_bonus_claims"].unique().to_list() == [3.0]


def test_missing_or_late_join_gives_defaults(tmp_path: Path, spec: FeatureSpec) -> None:
    rows = [
        ev("chat", 5, session="no-join"), cta(10, session="no-join", event_id="no-join"),
        ev("chat", 5, session="late"), cta(10, session="late", event_id="late"),
        join(10, session="late"), join(12, session="late", device="phone"),
        cta(20, session="late", event_id="after-join"),
        join(1, session="odd", device="smartwatch", channel=None, local_pickup=None),
        cta(2, session="odd", event_id="odd"),
    ]
    cta_rows, _, _ = build(tmp_path, rows)
    joined = ("minute_in_drop", "secs_since_join", "local_pickup", "device", "channel")
    defaults = {n: spec[n].default for n in joined}
    for imp in ("no-join", "late"):  # a join at the impression's own instant is not before it
        row = row_of(cta_rows, impression_id=imp)
        assert {n: row[n] for n in joined} == defaults
        assert (row["sess_chats"], row["secs_since_last_chat"]) == (1.0, 5.0)
    after = row_of(cta_rows, impression_id="after-join")  # the session's first join counts
    assert (after["secs_since_join"], after["device"]) == (10.0, spec["device"].encode("tv"))
    odd = row_of(cta_rows, impression_id="odd")
    assert (odd["device"], odd["channel"], odd["local_pickup"]) == (0.0, 0.0, 0.0)
    assert odd["secs_since_join"] == 1.0


def test_unknown_creator_and_variant_get_defaults(tmp_path: Path, spec: FeatureSpec) -> None:
    rows = [join(0), cta(5, variant="c00-v99", event_id="x"),
            join(0, session="s9", creator="c77"), cta(5, session="s9", creator="c77",
                                                      variant="c77-v1", event_id="y")]
    cta_rows, _, _ = build(tmp_path, rows)
    x, y = row_of(cta_rows, impression_id="x"), row_of(cta_rows, impression_id="y")
    items = [f.name for f in spec.cta_item]
    assert [x[n] for n in items] == [f.default for f in spec.cta_item]
    assert y["creator_niche"] == 0.0
    assert x["creator_niche"] == spec["creator_niche"].encode("ceramics") != 0.0


def test_history_counts_only_sessions_that_ended_before(tmp_path: Path) -> None:
    def session(name: str, start: float, end: float, creator: str = "c00", extra: int = 0) -> list[dict[str, Any]]:
        kw = {"session": name, "creator": creator}
        out = [join(start, **kw), ev("cta_click", start + 1, variant=f"{creator}-v1", **kw),
               *(ev("enroll", start + 2, amount=1.0, **kw) for _ in range(extra)),
               cta(start + 3, variant=f"{creator}-v1", event_id=f"imp-{name}", **kw),
               ev("leave", end, **kw)]
        return out

    rows = [
        *session("a", 0, 100, extra=1),  # ended before d began
        *session("b", 50, 300, extra=2),  # same creator, overlaps d (ended after d began)
        *session("c", 10, 150, creator="c01", extra=3),  # another creator
        *session("e", 120, 200),  # ends exactly when d begins: not strictly before
        *session("d", 200, 400),
        *session("f", 90, 100),  # ends at the same instant as a
        *session("g", 401, 500),
    ]
    cta_rows, _, _ = build(tmp_path, rows)
    hist = {r["impression_id"]: (r["hist_sessions"], r["hist_enrolls"], r["hist_cta_clicks"])
            for r in cta_rows.to_dicts()}
    assert hist["imp-a"] == (0.0, 0.0, 0.0)
    assert hist["imp-d"] == (2.0, 1.0, 2.0)  # a and f
    assert hist["imp-g"] == (5.0, 3.0, 5.0)  # a, b, d, e, f
    assert hist["imp-c"] == (0.0, 0.0, 0.0)  # its creator's first session


def test_partitioning_and_row_order_do_not_change_results(tmp_path: Path) -> None:
    events = generate_events(300, seed=5)
    catalog_path = tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(make_catalog(4)))
    outputs = []
    for name, partitions, shuffle in (("one", 1, False), ("many", 5, False), ("shuffled", 3, True)):
        clean = tmp_path / name
        frame = events.sample(fraction=1.0, shuffle=True, seed=1) if shuffle else events
        if shuffle:  # write unsorted files: the engine must not rely on ingest's order
            for p in range(partitions):
                part = frame.filter(partition_of(frame["viewer_key"], partitions) == p)
                out = clean / "events" / f"part={p:02d}" / "data.parquet"
                out.parent.mkdir(parents=True)
                part.write_parquet(out)
        else:
            write_clean(frame, clean, partitions)
        build_features(clean, catalog_path, tmp_path / f"out-{name}", CONFIG)
        cta_rows = pl.read_parquet(tmp_path / f"out-{name}" / "cta.parquet")
        bonus_rows = pl.read_parquet(tmp_path / f"out-{name}" / "bonus.parquet")
        slate = pl.struct("session_key", "slate_id")  # a slate's rows stay together
        assert bonus_rows.select((slate != slate.shift(1)).sum() + 1).item() == bonus_rows.select(
            slate.n_unique()).item()
        # Rows come partition by partition: compare in one order.
        outputs.append((cta_rows.sort("ts", "impression_id"),
                        bonus_rows.sort("ts", "session_key", "slate_id", "position", "bonus_id")))
    for other in outputs[1:]:
        assert other[0].equals(outputs[0][0]) and other[1].equals(outputs[0][1])
    assert outputs[0][0].height > 100 and outputs[0][1].height > 100


def test_outputs_are_deterministic_and_hold_no_viewer_id(tmp_path: Path) -> None:
    events = generate_events(200, seed=3)
    clean, catalog_path = write_dataset(tmp_path, events, make_catalog(4))
    first = build_features(clean, catalog_path, tmp_path / "a", CONFIG)
    build_features(clean, catalog_path, tmp_path / "b", CONFIG)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["bonus.parquet", "catalog.json", "cta.parquet", "feature_spec.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    viewer_keys = events["viewer_key"].unique().to_list()
    for name in names:
        data = (tmp_path / "a" / name).read_bytes()
        assert not any(k.encode() in data for k in viewer_keys), name
    for table in ("cta.parquet", "bonus.parquet"):
        assert "viewer_key" not in pl.read_parquet_schema(tmp_path / "a" / table)
    spec = FeatureSpec.load(tmp_path / "a" / "feature_spec.json")
    assert spec.hash == first.spec_hash
    assert first.to_dict()["cta_rows"] == pl.read_parquet(tmp_path / "a" / "cta.parquet").height


def test_table_schema_and_encoded_catalog(tmp_path: Path) -> None:
    clean, catalog_path = write_dataset(tmp_path, generate_events(100, seed=2), make_catalog(4))
    build_features(clean, catalog_path, tmp_path / "out", CONFIG)
    spec = FeatureSpec.load(tmp_path / "out" / "feature_spec.json")
    cta_rows = pl.read_parquet(tmp_path / "out" / "cta.parquet")
    bonus_rows = pl.read_parquet(tmp_path / "out" / "bonus.parquet")
    assert cta_rows.columns == ["impression_id", "ts", "creator_id", "drop_id", "session_key", "variant",
                                "propensity", *spec.cta_names, "clicked", "enrolled", "label"]
    assert bonus_rows.columns == ["slate_id", "ts", "creator_id", "drop_id", "session_key", "bonus_id",
                                  "position", "propensity", *spec.bonus_names, "claimed", "picked_up",
                                  "relevance"]
    assert all(cta_rows.schema[n] == pl.Float32 for n in spec.cta_names)
    assert all(bonus_rows.schema[n] == pl.Float32 for n in spec.bonus_names)
    assert cta_rows.schema["ts"] == pl.Datetime("us", "UTC")
    assert cta_rows.schema["label"] == pl.Int8()
    assert bonus_rows.schema["relevance"] == pl.Int8()
    encoded = json.loads((tmp_path / "out" / "catalog.json").read_text())
    assert encoded["spec_hash"] == spec.hash
    assert encoded["cta_item_names"] == [f.name for f in spec.cta_item]
    for creator in encoded["creators"]:
        for v in creator["variants"]:
            assert v["features"] == [f32(spec["variant_style"].encode(v["style"])),
                                     f32(v["discount"]), f32(v["urgency"])]
        for b in creator["bonuses"]:
            assert b["features"] == [f32(spec["bonus_kind"].encode(b["kind"])), f32(b["value"]),
                                     f32(b["requires_pickup"])]
    # Table item features equal the encoded catalog's for every shown variant.
    lookup = {(c["creator_id"], v["variant"]): v["features"]
              for c in encoded["creators"] for v in c["variants"]}
    items = cta_rows.select("creator_id", "variant", *(f.name for f in spec.cta_item)).rows()
    assert all(lookup[(c, v)] == list(rest) for c, v, *rest in items)


# ---- errors: clear, specific, and nothing written -------------------------------------


def _assert_untouched(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "previous run"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")]


@pytest.fixture
def previous_out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    return out


def test_missing_clean_dir_and_catalog_are_clear(tmp_path: Path, previous_out: Path) -> None:
    clean, catalog_path = write_dataset(tmp_path, generate_events(20, seed=1), make_catalog(2))
    with pytest.raises(InputUnreadableError, match=r"no clean events.*carryon ingest"):
        build_features(tmp_path / "absent", catalog_path, previous_out, CONFIG)
    with pytest.raises(InputUnreadableError, match=r"absent\.json.*cannot read the catalog.*carryon simulate"):
        build_features(clean, tmp_path / "absent.json", previous_out, CONFIG)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "events").mkdir()
    with pytest.raises(InputUnreadableError, match=r"no partitions.*carryon ingest"):
        build_features(tmp_path / "empty", catalog_path, previous_out, CONFIG)
    _assert_untouched(previous_out)


@pytest.mark.parametrize(
    ("catalog", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"schema": 2, "creators": []}', "schema must be 1, got 2"),
        ('{"schema": 1, "creators": []}', "creators is empty"),
        ('{"schema": 1, "creators": [{"creator_id": "c", "variants": [], "bonuses": []}]}',
         r"creators\[0\]\.niche is missing"),
        ('{"schema": 1, "creators": [{"creator_id": "c", "niche": "n", "bonuses": [],'
         ' "variants": [{"variant": "v", "style": "plain", "discount": "lots", "urgency": 0}]}]}',
         r"creators\[0\]\.variants\[0\]\.discount has the wrong type"),
    ],
)
def test_bad_catalog_is_refused(tmp_path: Path, previous_out: Path, catalog: str, match: str) -> None:
    clean, catalog_path = write_dataset(tmp_path, generate_events(20, seed=1), make_catalog(2))
    catalog_path.write_text(catalog)
    with pytest.raises((DataError, InputUnreadableError), match=match):
        build_features(clean, catalog_path, previous_out, CONFIG)
    _assert_untouched(previous_out)


def test_empty_events_is_a_data_error(tmp_path: Path, previous_out: Path) -> None:
    events = generate_events(20, seed=1).head(0)
    clean, catalog_path = tmp_path / "clean", tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(make_catalog(2)))
    out = clean / "events" / "part=00" / "data.parquet"
    out.parent.mkdir(parents=True)
    events.write_parquet(out)
    with pytest.raises(DataError, match="hold no event"):
        build_features(clean, catalog_path, previous_out, CONFIG)
    _assert_untouched(previous_out)


@pytest.mark.parametrize(("change", "match"), [
    (lambda f: f.drop("session_key"), "column 'session_key' is missing"),
    (lambda f: f.with_columns(pl.col("ts").dt.epoch("us")), "column 'ts' must be"),
])
def test_wrong_columns_are_refused(tmp_path: Path, previous_out: Path, change: Any, match: str) -> None:
    clean, catalog_path = tmp_path / "clean", tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(make_catalog(2)))
    out = clean / "events" / "part=00" / "data.parquet"
    out.parent.mkdir(parents=True)
    change(generate_events(20, seed=1)).write_parquet(out)
    with pytest.raises(DataError, match=rf"part=00/data\.parquet: {match}"):
        build_features(clean, catalog_path, previous_out, CONFIG)
    _assert_untouched(previous_out)


def test_unreadable_partition_is_refused(tmp_path: Path, previous_out: Path) -> None:
    clean, catalog_path = tmp_path / "clean", tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(make_catalog(2)))
    out = clean / "events" / "part=00" / "data.parquet"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputUnreadableError, match=r"part=00/data\.parquet: not a readable Parquet"):
        build_features(clean, catalog_path, previous_out, CONFIG)
    _assert_untouched(previous_out)


def test_progress_reports_every_partition_and_summary_is_json(tmp_path: Path) -> None:
    clean, catalog_path = write_dataset(tmp_path, generate_events(100, seed=4), make_catalog(2), 3)
    calls: list[tuple[str, int, int]] = []
    summary = build_features(clean, catalog_path, tmp_path / "out", CONFIG,
                             progress=lambda phase, done, total: calls.append((phase, done, total)))
    assert calls == [("features", i, 3) for i in range(4)]
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["partitions"] == 3 and data["spec_hash"] == summary.spec_hash
    assert sum(data["relevance"].values()) == data["bonus_rows"]
    assert data["events"] == generate_events(100, seed=4).height
