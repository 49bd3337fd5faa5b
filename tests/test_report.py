"""pipeline.report and report_page: the creator report, rendered in headless Chromium.

A temporary SQLite tracking store holds real candidates (tiny scikit-learn models logged
by ``record_candidates`` with real matplotlib plots); ``write_reports`` writes a page per
registered model, and Chromium shows that the page renders every version, the
recommendation and every image without JavaScript or external resources.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser import chromium, dump_dom, screenshot  # noqa: F401  (chromium: fixture, once per session)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from features.errors import CarryonError
from pipeline.registry import CANDIDATE, CHAMPION, RegistryError, SelectRule, VersionRow, select_candidate
from pipeline.report import REPORTS_EXPERIMENT, TAG_REPORT_OF, TAG_REPORT_RUN, ReportSummary, write_reports
from pipeline.tracking import BONUS_MODEL, CTA_MODEL, TAG_FAMILY, TAG_GATES, experiment, model_kind, open_tracking

mlflow = pytest.importorskip("mlflow")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from models.result import Candidate  # noqa: E402
from pipeline.record import record_candidates  # noqa: E402

FORBIDDEN = ("/work/", "/tmp/", "/root/", "/home/", "file://", "runs:/", "models:/", "mlflow-artifacts:",
             "http://", "https://", "<script", "javascript:")
PLOT_BLUE = (0x1F, 0x77, 0xB4)  # matplotlib's first line colour, drawn in every test plot
CTA_METRICS = (  # (auc, ece, lift_dr, low, high) of the two CTA candidates
    (0.66, 0.031, 0.004, -0.006, 0.015),
    (0.72, 0.012, 0.021, 0.007, 0.034),
)
BONUS_METRICS = {"ndcg_at_3": 0.41, "ndcg_at_5": 0.52, "map": 0.47,
                 "ndcg_at_5_gain": 0.031, "ndcg_at_5_gain_ci_low": 0.012, "ndcg_at_5_gain_ci_high": 0.05}


# --- a store with real candidates ----------------------------------------------------------------


def _figure(title: str, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(3.2, 2.4))
    ax.plot(np.arange(10), rng.random(10).cumsum(), color="#1f77b4", linewidth=3)
    ax.set(title=title)
    fig.tight_layout()
    return fig


def _candidate(kind: str, family: str, metrics: Mapping[str, float], seed: int, plots: tuple[str, ...]) -> Candidate:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=120) > 0).astype(np.int8)
    model = LogisticRegression(C=0.5 + seed).fit(x, y)
    return Candidate(kind=kind, family=family, model=model, feature_names=("minute_in_drop", "device", "a", "b"),
                     spec_hash="0123abcd", params={"C": 0.5 + seed}, metrics=dict(metrics),
                     input_example=rng.normal(size=(5, 4)).astype(np.float32),
                     figures={name: _figure(f"{family} {name}", seed + i) for i, name in enumerate(plots)})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MlflowClient, Path]]:
    """A fresh SQLite store under the temp dir, named by MLFLOW_TRACKING_URI (env mapping and os.environ)."""
    project = tmp_path_factory.mktemp("report-project")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{project / 'store' / 'mlflow.db'}"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
        # MLflow infers pip requirements in a subprocess (~4 s a model); the page does not use them.
        mp.setattr(mlflow.models, "infer_pip_requirements", lambda *a, **k: ["scikit-learn"])
        yield open_tracking(project, env), project


@pytest.fixture(scope="module")
def reports(store: tuple[MlflowClient, Path]) -> tuple[ReportSummary, Path]:
    """Two CTA candidates and a bonus ranker, later stages simulated on one, candidates selected, pages written."""
    client, project = store
    cta = [_candidate("cta", "logreg", dict(zip(("auc", "ece", "lift_dr", "lift_dr_ci_low", "lift_dr_ci_high"), m,
                                                strict=True)), i, ("lift.png", "roc.png", "calibration.png"))
           for i, m in enumerate(CTA_METRICS)]
    bonus = [_candidate("bonus-ranker", "pointwise", BONUS_METRICS, 7, ("ndcg_by_k.png", "lift.png"))]
    recorded = record_candidates(client, [*cta, *bonus], {"git_commit": "abc123"})
    for candidate in (*cta, *bonus):
        for fig in candidate.figures.values():
            plt.close(fig)
    second = recorded[1]
    # What the export and benchmark stages will add later: gates and a per-device latency.
    client.set_tag(second.run_id, TAG_GATES, "passed")
    client.log_metric(second.run_id, "latency_p95_us.pixel-7", 180.0)
    select_candidate(client, CTA_MODEL, SelectRule("auc"))
    select_candidate(client, BONUS_MODEL, SelectRule("ndcg_at_5"))
    client.set_registered_model_alias(CTA_MODEL, CHAMPION, "1")  # the creator's earlier choice
    out = project / "reports"
    return write_reports(client, [CTA_MODEL, BONUS_MODEL], out), out


# --- reading pages -------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Text, elements by id, and img attributes of an HTML document."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.images: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self.by_id: dict[str, list[str]] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag == "img":
            self.images.append(attributes)
            return
        if tag in ("meta", "br", "link"):
            return
        self._open.append((tag, attributes.get("id")))
        if attributes.get("id"):
            self.by_id.setdefault(attributes["id"], [])

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for _, ident in self._open:
            if ident:
                self.by_id[ident].append(data)

    def all_text(self) -> str:
        return re.sub(r"\s+", " ", "".join(self.text))

    def element_text(self, ident: str) -> str:
        return re.sub(r"\s+", " ", "".join(self.by_id.get(ident, [])))


def _png_width(data_uri: str) -> int:
    import base64

    raw = base64.b64decode(data_uri.split(",", 1)[1])
    return int.from_bytes(raw[16:20], "big")


PROBE = ('<script>window.addEventListener("load",function(){for(const i of document.images){'
         'i.setAttribute("data-natural-width",String(i.naturalWidth));}'
         'document.body.setAttribute("data-probe","done");});</script>')


def _rendered(chromium: str, page: Path, work: Path) -> _Page:  # noqa: F811
    """The page as Chromium built it; a test-only probe writes each image's decoded width into the DOM."""
    probe = work / f"probe-{page.name}"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = dump_dom(chromium, probe, work / "profile")
    assert 'data-probe="done"' in dom, "the probe script did not run: the page did not finish loading"
    return _Page(dom)


# --- the browser ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("name", "versions"), [(CTA_MODEL, (1, 2)), (BONUS_MODEL, (1,))])
def test_chromium_renders_every_version_the_recommendation_and_the_plots(
    chromium: str, reports: tuple[ReportSummary, Path], tmp_path: Path, name: str, versions: tuple[int, ...],  # noqa: F811
) -> None:
    summary, out = reports
    report = next(r for r in summary.reports if r.name == name)
    page = _rendered(chromium, out / report.file, tmp_path)

    text = page.all_text()
    for version in versions:
        assert f"Version {version}:" in text
        assert f"v{version}" in page.by_id
    assert report.candidate is not None
    assert f"The current candidate is version {report.candidate}" in page.element_text("recommendation")
    assert len(page.images) == report.plots > 0
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert int(img["data-natural-width"]) == _png_width(img["src"]) > 0, "an image did not decode"


@pytest.mark.slow
def test_the_page_paints_its_plots_without_javascript(
    chromium: str, reports: tuple[ReportSummary, Path], tmp_path: Path,  # noqa: F811
) -> None:
    _, out = reports
    html_text = (out / "cta.html").read_text(encoding="utf-8")
    assert "<script" not in html_text and " onload=" not in html_text  # nothing to run: a static page
    shot = screenshot(chromium, out / "cta.html", tmp_path / "profile", tmp_path / "cta.png", height=3200)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    not_white = (pixels.min(axis=2) < 235).mean()
    plot_blue = (np.abs(pixels - np.array(PLOT_BLUE)).max(axis=2) < 40).sum()
    assert not_white > 0.03, f"the screenshot is almost blank ({not_white:.1%} of pixels not white)"
    assert plot_blue > 200, "no plot line was painted: the inline images did not show"


@pytest.mark.slow
def test_the_probe_sees_a_broken_image(chromium: str, reports: tuple[ReportSummary, Path], tmp_path: Path) -> None:  # noqa: F811
    """The check above could fail: an image whose data is corrupt decodes to width 0."""
    _, out = reports
    text = (out / "cta.html").read_text(encoding="utf-8")
    start = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = tmp_path / "broken.html"
    broken.write_text(text[:start] + "AAAA" + text[start + 4:], encoding="utf-8")  # clobbers the PNG signature
    widths = [int(img["data-natural-width"]) for img in _rendered(chromium, broken, tmp_path).images]
    assert widths[0] == 0
    assert all(w > 0 for w in widths[1:])


# --- what the page says --------------------------------------------------------------------------


def test_summary_names_the_files_and_the_versions(reports: tuple[ReportSummary, Path]) -> None:
    summary, out = reports
    data = summary.to_dict()
    assert data["experiment"] == REPORTS_EXPERIMENT
    assert [(r["name"], r["file"], r["versions"], r["candidate"], r["champion"]) for r in data["reports"]] == [
        (CTA_MODEL, "cta.html", [1, 2], 2, 1), (BONUS_MODEL, "bonus-ranker.html", [1], 1, None)]
    assert [r["plots"] for r in data["reports"]] == [6, 2]
    assert sorted(p.name for p in out.iterdir()) == ["bonus-ranker.html", "cta.html"]  # no temp files left
    json.dumps(data)


def test_each_page_is_logged_to_a_run_of_the_reports_experiment(
    store: tuple[MlflowClient, Path], reports: tuple[ReportSummary, Path], tmp_path: Path
) -> None:
    client, _ = store
    summary, out = reports
    for report in summary.reports:
        run = client.get_run(report.run_id)
        assert run.info.status == "FINISHED"
        assert client.get_experiment(run.info.experiment_id).name == REPORTS_EXPERIMENT
        assert run.data.tags[TAG_REPORT_OF] == report.name
        assert client.get_registered_model(report.name).tags[TAG_REPORT_RUN] == report.run_id
        logged = Path(client.download_artifacts(report.run_id, report.file, str(tmp_path)))
        assert logged.read_bytes() == (out / report.file).read_bytes()


@pytest.mark.parametrize("file", ["cta.html", "bonus-ranker.html"])
def test_page_is_self_contained_without_machine_paths(reports: tuple[ReportSummary, Path], file: str) -> None:
    text = (reports[1] / file).read_text(encoding="utf-8")
    assert [s for s in FORBIDDEN if s in text] == []
    assert str(reports[1].parent) not in text
    page = _Page(text)
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}


def test_cta_page_speaks_plain_words(store: tuple[MlflowClient, Path], reports: tuple[ReportSummary, Path]) -> None:
    client, _ = store
    text = _Page((reports[1] / "cta.html").read_text(encoding="utf-8")).all_text()
    assert "simple linear model" in text
    # version 2: lift 0.021 in [0.007, 0.034] -> clicks per 100 impressions
    assert ("is expected to bring between 0.70 and 3.40 more clicks per 100 impressions than what you showed "
            "before (best guess: 2.10 more)") in text
    # version 1: its range straddles zero
    assert "could bring anything from 0.60 fewer clicks per 100 impressions to 1.50 more" in text
    assert "the data cannot tell yet whether it helps" in text
    assert "AUC 0.720 (good)" in text and "Calibration error 1.2 percentage points (well calibrated)" in text
    assert "180 µs or less for 95 out of 100 decisions on pixel-7" in text
    assert text.count("not measured yet (the benchmarks have not run for this version)") == 1
    assert "It passed the export checks" in text and "The export checks have not run for this version yet" in text
    assert "promote it: carryon models promote cta 2" in text
    assert "Your champion (the version you chose to run) is version 1" in text
    source = client.get_model_version(CTA_MODEL, "2").source
    sizes = {f.path: f.file_size for f in client.list_logged_model_artifacts(source.rsplit("/", 1)[-1])}
    assert f"{sizes['model.skops'] / 1024:.1f} kB (the trained model's files" in text


def test_ranker_page_explains_the_gain_over_popularity(reports: tuple[ReportSummary, Path]) -> None:
    text = _Page((reports[1] / "bonus-ranker.html").read_text(encoding="utf-8")).all_text()
    assert "pointwise model" in text
    assert ("Ordering bonuses with this model is expected to bring between 1.20 and 5.00 more points of ranking "
            "quality (NDCG@5, out of 100) than ordering them by popularity (best guess: 3.10 more)") in text
    assert "NDCG@5 0.520" in text and "MAP 0.470" in text and "NDCG@3 0.410" in text
    assert "The current candidate is version 1 (pointwise model)" in text


# --- failure paths and odd stores (cheap versions: runs without models) ----------------------------


def _add_version(client: MlflowClient, name: str, metrics: Mapping[str, float], tags: Mapping[str, str]) -> int:
    run = client.create_run(experiment(client, model_kind(name)), tags=dict(tags))
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return int(client.create_model_version(name, source=f"{run.info.artifact_uri}/model",
                                           run_id=run.info.run_id).version)


def test_text_from_the_store_is_escaped(store: tuple[MlflowClient, Path], tmp_path: Path) -> None:
    client, _ = store
    evil = '<img src=x onerror="alert(1)">&'
    _add_version(client, "cta-escape", {"auc": 0.6}, {TAG_FAMILY: evil, TAG_GATES: "<b>odd</b>"})
    write_reports(client, ["cta-escape"], tmp_path)
    text = (tmp_path / "cta-escape.html").read_text(encoding="utf-8")
    assert evil not in text and "<b>odd" not in text
    assert "model of type &lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in text
    page = _Page(text)
    assert page.images == [] and "b" not in page.tags


def test_a_version_with_nothing_measured_says_so(store: tuple[MlflowClient, Path], tmp_path: Path) -> None:
    client, _ = store
    _add_version(client, "cta-bare", {}, {})
    summary = write_reports(client, ["cta-bare"], tmp_path)
    text = _Page((tmp_path / "cta-bare.html").read_text(encoding="utf-8")).all_text()
    assert summary.to_dict()["reports"][0]["candidate"] is None
    assert "No version is the candidate yet: run carryon select" in text
    assert "The expected lift was not measured for this version." in text
    for phrase in ("model of unknown type", "not known", "not measured yet", "not checked yet"):
        assert phrase in text
    assert [s for s in FORBIDDEN if s in text] == []  # the version's source is a file:// URI: never shown


def test_a_lift_below_zero_and_a_candidate_without_a_sure_gain(store: tuple[MlflowClient, Path],
                                                               tmp_path: Path) -> None:
    client, _ = store
    _add_version(client, "cta-worse", {"lift_dr": -0.02, "lift_dr_ci_low": -0.035, "lift_dr_ci_high": -0.004}, {})
    v2 = _add_version(client, "cta-worse", {"lift_dr": 0.01, "lift_dr_ci_low": -0.001, "lift_dr_ci_high": 0.02}, {})
    client.set_registered_model_alias("cta-worse", CANDIDATE, str(v2))
    write_reports(client, ["cta-worse"], tmp_path)
    text = _Page((tmp_path / "cta-worse.html").read_text(encoding="utf-8")).all_text()
    assert "is expected to bring between 0.40 and 3.50 fewer clicks per 100 impressions" in text
    assert "its likely range still includes no gain" in text


def test_a_model_without_versions_gets_a_page_that_says_so(store: tuple[MlflowClient, Path], tmp_path: Path) -> None:
    client, _ = store
    client.create_registered_model("bonus-ranker-empty")
    summary = write_reports(client, ["bonus-ranker-empty"], tmp_path)
    assert summary.reports[0].versions == ()
    assert "No versions yet" in (tmp_path / "bonus-ranker-empty.html").read_text(encoding="utf-8")


def test_a_plot_that_is_no_png_is_named_not_embedded(store: tuple[MlflowClient, Path], tmp_path: Path) -> None:
    client, _ = store
    _add_version(client, "cta-badplot", {"auc": 0.6}, {})
    run_id = client.get_model_version("cta-badplot", "1").run_id
    bad = tmp_path / "src" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png at all")
    client.log_artifact(run_id, str(bad), "plots")
    summary = write_reports(client, ["cta-badplot"], tmp_path / "out")
    text = (tmp_path / "out" / "cta-badplot.html").read_text(encoding="utf-8")
    assert summary.reports[0].plots == 0 and "data:image" not in text
    assert "Plot bad.png is not shown: not a PNG image" in _Page(text).all_text()


def test_an_unknown_model_fails_and_writes_nothing(store: tuple[MlflowClient, Path], tmp_path: Path) -> None:
    client, _ = store
    before = {r.info.run_id for r in _report_runs(client)}
    with pytest.raises(RegistryError, match=r"no registered model named 'nope'.*train candidates first"):
        write_reports(client, ["nope"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert {r.info.run_id for r in _report_runs(client)} == before
    assert issubclass(RegistryError, CarryonError)


@pytest.mark.parametrize(("names", "error", "match"), [
    ("cta", TypeError, "not the string 'cta'"),
    (["../cta"], ValueError, r"registered model name must match .* got '\.\./cta'"),
    (["cta/x"], ValueError, "got 'cta/x'"),
    ([""], ValueError, "got ''"),
])
def test_bad_names_are_refused_before_anything_is_written(
    store: tuple[MlflowClient, Path], tmp_path: Path, names: Any, error: type[Exception], match: str
) -> None:
    client, _ = store
    with pytest.raises(error, match=match):
        write_reports(client, names, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_when_mlflow_fails_the_old_page_stays_and_the_run_is_marked_failed(
    store: tuple[MlflowClient, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = store
    _add_version(client, "cta-flaky", {"auc": 0.61}, {})
    write_reports(client, ["cta-flaky"], tmp_path)
    old = (tmp_path / "cta-flaky.html").read_bytes()
    _add_version(client, "cta-flaky", {"auc": 0.62}, {})

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise MlflowException("artifact store is read-only")

    monkeypatch.setattr(client, "log_artifact", refuse)
    with pytest.raises(MlflowException, match="read-only"):
        write_reports(client, ["cta-flaky"], tmp_path)
    assert (tmp_path / "cta-flaky.html").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cta-flaky.html"]
    failed = [r for r in _report_runs(client) if r.data.tags[TAG_REPORT_OF] == "cta-flaky"
              and r.info.status == "FAILED"]
    assert len(failed) == 1


def _report_runs(client: MlflowClient) -> list[Any]:
    found = client.get_experiment_by_name(REPORTS_EXPERIMENT)
    return [] if found is None else list(client.search_runs([found.experiment_id], max_results=1000))


# --- property: whatever the store holds, the page's markup is ours -------------------------------

_ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "strong", "code", "table",
                 "thead", "tbody", "tr", "th", "td", "a", "span", "section", "dl", "dt", "dd", "details",
                 "summary", "figure", "img", "figcaption"}


@settings(max_examples=60, deadline=None)
@given(family=st.text(max_size=40), gates=st.text(max_size=20), device=st.text(max_size=20),
       metric=st.floats(allow_nan=True, allow_infinity=True))
def test_any_text_or_number_renders_as_text(family: str, gates: str, device: str, metric: float) -> None:
    from pipeline.report_page import FAMILIES, VersionEvidence, render_page

    assume(family not in FAMILIES)  # a known family is shown in words, not by its name
    row = VersionRow(name="cta", version=1, run_id="r1", family=family or None, created="2026-01-01T00:00:00Z",
                     aliases=(CANDIDATE,), metrics={"auc": metric, "lift_dr": metric, "lift_dr_ci_low": metric,
                                                    "lift_dr_ci_high": metric},
                     gates=gates or None, tags={"carryon.latency.note": device})
    text = render_page("cta", [VersionEvidence(row, None, (), ())], "2026-01-01T00:00:00.000000Z")
    page = _Page(text)
    assert page.tags <= _ALLOWED_TAGS
    assert page.images == []
    shown = page.all_text()
    for value in (family, gates, device):
        assert re.sub(r"\s+", " ", value).strip() in shown
