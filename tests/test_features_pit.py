"""Point in time: nothing at or after a decision leaks into its features.

In one session per (viewer, creator), events of every kind are planted at the very
instant of its last decision and later in the session (chats, reactions, impressions,
clicks, enrolls, claims, pickups, a second join, a new slate), plus a new session of the
same viewer with the same creator starting at that instant. Rebuilt, the features of
every original decision of those sessions are unchanged, while the forward-looking
labels do react. (Other sessions may legitimately change: their history counts the
planted sessions' enrolls and claims.)
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from eventgen import CLEAN_SCHEMA, SEC, generate_events, make_catalog, write_dataset

from features.batch import build_features
from features.config import FeatureConfig
from features.spec import FeatureSpec

CONFIG = FeatureConfig(label_window_s=120.0)
PLANTED = ("chat", "reaction", "cta_impression", "cta_click", "enroll", "bonus_impression",
           "bonus_claim", "pickup_select", "join", "leave")


def planted_sessions(events: pl.DataFrame) -> pl.Series:
    """One session with decisions per (viewer, creator): the sessions planted into."""
    return (
        events.filter(pl.col("type").is_in(["cta_impression", "bonus_impression"]))
        .group_by("viewer_key", "creator_id").agg(pl.col("session_key").min())
        .get_column("session_key")
    )


def _plant(events: pl.DataFrame) -> pl.DataFrame:
    """Events of every kind at the last decision of each planted session and between it
    and the session's end (never past it), and a rival session from that instant."""
    ends = events.group_by("session_key").agg(pl.col("ts").max().dt.epoch("us").alias("end"))
    decisions = (
        events.filter(pl.col("type").is_in(["cta_impression", "bonus_impression"])
                      & pl.col("session_key").is_in(planted_sessions(events).implode()))
        .sort("ts", "event_id").group_by("session_key").last()
        .join(ends, on="session_key").sort("session_key")
        .with_columns(pl.col("ts").dt.epoch("us"))  # integer µs below; cast back at the end
        .with_row_index("n")
    )
    later = pl.col("ts") + (pl.col("end") - pl.col("ts")) // 2  # never past the session's end
    planted = []
    for when_name, when in (("at", pl.col("ts")), ("after", later)):
        for kind in PLANTED:
            tag = pl.format("planted-{}-{}-{}", pl.lit(when_name), pl.lit(kind), pl.col("n"))
            planted.append(decisions.select(
                tag.alias("event_id"), when.alias("ts"), "creator_id", "drop_id", "session_key",
                "viewer_key", pl.lit(kind).alias("type"),
                pl.format("{}-v{}", "creator_id", pl.col("n") % 8).alias("variant"),
                pl.lit(0.5).alias("propensity"),
                pl.coalesce("bonus_id", pl.format("{}-b00", "creator_id")).alias("bonus_id"),
                (pl.when(pl.lit(kind) == "bonus_impression").then(tag)
                 .otherwise(pl.coalesce("slate_id", tag))).alias("slate_id"),
                pl.lit(1, pl.Int32).alias("position"), pl.lit(10.0).alias("amount"),
                pl.lit("phone").alias("device"), pl.lit("stream").alias("channel"),
                pl.lit(True).alias("local_pickup"), (pl.col("ts") - 3600 * SEC).alias("drop_started_at"),
            ))
    # A new session of the same viewer with the same creator, from the decision on.
    rival = decisions.select(
        pl.format("planted-rival-{}", pl.col("n")).alias("event_id"), "ts", "creator_id", "drop_id",
        pl.format("planted-session-{}", pl.col("n")).alias("session_key"), "viewer_key",
        pl.lit("enroll").alias("type"), pl.lit(149.0).alias("amount"),
    )
    frames = [*planted, rival]
    typed = [f.with_columns(pl.col(c).cast(CLEAN_SCHEMA[c]) for c in f.columns) for f in frames]
    return pl.concat([events, *typed], how="diagonal").select(list(CLEAN_SCHEMA)).sort(
        "viewer_key", "ts", "event_id")


class Built:
    """Feature tables of the original events and of the planted ones."""

    def __init__(self, root: Path) -> None:
        events = generate_events(400, seed=21)
        self.sessions = planted_sessions(events)
        tables = {}
        for name, frame in (("original", events), ("planted", _plant(events))):
            clean, catalog = write_dataset(root / name, frame, make_catalog(4))
            build_features(clean, catalog, root / name / "features", CONFIG)
            tables[name] = (pl.read_parquet(root / name / "features" / "cta.parquet"),
                            pl.read_parquet(root / name / "features" / "bonus.parquet"))
        self.spec = FeatureSpec.load(root / "original" / "features" / "feature_spec.json")
        (self.cta, self.bonus), (self.cta_planted, self.bonus_planted) = (
            tables["original"], tables["planted"])

    def originals(self, frame: pl.DataFrame, id_column: str) -> pl.DataFrame:
        """Rows of the planted sessions that are not planted themselves."""
        return frame.filter(pl.col("session_key").is_in(self.sessions.implode())
                            & ~pl.col(id_column).str.starts_with("planted-"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return Built(tmp_path_factory.mktemp("pit"))


def test_planted_events_change_no_feature_of_an_earlier_decision(built: Built) -> None:
    spec = built.spec
    assert built.cta_planted.height > built.cta.height  # planting happened
    assert built.bonus_planted.height > built.bonus.height
    before = built.originals(built.cta, "impression_id").select("impression_id", *spec.cta_names)
    after = built.originals(built.cta_planted, "impression_id").select("impression_id", *spec.cta_names)
    assert before.height > 100 and after.equals(before)
    keys = ["session_key", "slate_id", "bonus_id", "position"]
    before_b = built.originals(built.bonus, "slate_id").sort(keys).select(*keys, *spec.bonus_names)
    after_b = built.originals(built.bonus_planted, "slate_id").sort(keys).select(*keys, *spec.bonus_names)
    assert before_b.height > 100 and after_b.equals(before_b)


def test_labels_do_see_the_future(built: Built) -> None:
    before = built.originals(built.cta, "impression_id")
    after = built.originals(built.cta_planted, "impression_id")
    assert after["label"].sum() > before["label"].sum()  # planted enrolls land in the window
    before_b = built.originals(built.bonus, "slate_id")
    after_b = built.originals(built.bonus_planted, "slate_id")
    assert after_b["claimed"].sum() > before_b["claimed"].sum()


def test_planted_decisions_see_what_was_before_them(built: Built) -> None:
    """A planted impression 'after' sees the events planted at the earlier decision."""
    cta_planted = built.cta_planted
    after = cta_planted.filter(pl.col("impression_id").str.starts_with("planted-after-"))
    at = cta_planted.filter(pl.col("impression_id").str.starts_with("planted-at-"))
    joined = after.join(at, on="session_key", suffix="_at").filter(pl.col("ts") > pl.col("ts_at"))
    assert joined.height > 0
    assert (joined["sess_cta_impressions"] > joined["sess_cta_impressions_at"]).all()
