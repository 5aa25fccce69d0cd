"""``lee report`` on a real small sweep: every figure file, the HTML page, and the page in a headless browser."""

from __future__ import annotations

import html.parser
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipelines.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Two tiny timm models with all three metric families on the sample set's train/test/ood datasets, plus
# a BlurPool / plain ResNet-50 pair (LEE only, test set) for the anti-aliasing case study: every figure
# has data. Random init, 32 px, 4 images.
TINY = ["test_resnet.r160_in1k", "test_vit.r160_in1k"]
PAIR = ["resnetblur50.bt_in1k", "resnet50.a1_in1k"]
GENS = ["translate_x", "rotate"]
ALT = ["circular_shift_consistency", "eq_t", "sampled_equivariance_error", "shift_consistency"]
FIGURES = [
    "fig1_lee_vs_top1",
    "fig4a_layerwise_cumulative",
    "fig4b_layer_type_shares",
    "fig5a_generators_vs_top1",
    "fig5b_alt_metrics_vs_top1",
    "fig6a_antialiasing",
    "fig6b_scale_within_family",
    "fig6c_pretraining_data",
    "fig7_gap",
    "fig8_where_lee_lives",
]
ANALYSES = ["accuracy", "scale", "gap", "layerwise", "agreement", "border_share", "layer_location"]


@pytest.fixture(scope="module")
def sweep_root(ray_session, tmp_path_factory) -> Path:
    from pipelines.running.execute import execute
    from pipelines.running.plan import plan
    from pipelines.spec.config import SweepConfig

    # characters that must be escaped in HTML, in the results root's path
    root = tmp_path_factory.mktemp("report") / "results <&> x"
    common = dict(generators=GENS, images=4, img_size=32, output=str(root), batch_size=4, seed=0)
    for cfg in (
        SweepConfig(
            models=TINY,
            datasets=["sample"],
            metrics=["lee", "layerwise", "alt", "explain"],
            alt_metrics=ALT,
            layerwise_generators=GENS,
            **common,
        ),
        SweepConfig(models=PAIR, datasets=["sample-test"], metrics=["lee"], **common),
    ):
        result = execute(plan(cfg))
        assert all(r["status"] == "done" for r in result.rows), [r.get("error") for r in result.rows]
    return root


@pytest.fixture(scope="module")
def report(sweep_root) -> Path:
    out = sweep_root.parent / "report"
    rc = main(
        ["report", "--results", str(sweep_root), "--out", str(out), "--weights-filter", "random", "--n-boot", "200"]
    )
    assert rc == 0
    return out


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.ids: list[str] = []
        self.classes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "a":
            self.links.append(a["href"])
        self.ids += [a["id"]] if "id" in a else []
        self.classes += (a.get("class") or "").split()

    def handle_data(self, data):
        self.text.append(data)


def _page(out: Path) -> _Page:
    p = _Page()
    p.feed((out / "index.html").read_text(encoding="utf-8"))
    return p


def _svg_text(path: Path) -> str:
    tree = ET.parse(path)
    assert tree.getroot().tag.endswith("svg")
    return " ".join(" ".join(t.itertext()) for t in tree.iter() if t.tag.endswith("text"))


def _only_figures(monkeypatch, *stems: str) -> None:
    """Draw only these figures of the report (every figure is drawn and checked by the tests on the module's
    sweep and on the planted store): a test that looks at a few figures does not wait for the others."""
    import pipelines.analysis.report as R

    specs = tuple(spec for spec in R.FIGURES if spec.stem in stems)
    assert sorted(spec.stem for spec in specs) == sorted(stems), stems
    monkeypatch.setattr(R, "FIGURES", specs)


def _assert_real_image(path: Path, min_size: tuple[int, int] = (300, 200)) -> np.ndarray:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= min_size[0] and im.height >= min_size[1], (path, im.size)
        px = np.asarray(im.convert("RGB"))
    colours = np.unique(px[::3, ::3].astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32))
    assert px.std() > 5 and len(colours) > 20, f"{path} looks blank"
    return px


def test_report_writes_every_figure_with_data(report):
    for stem in FIGURES:
        png, svg = report / f"{stem}.png", report / f"{stem}.svg"
        assert png.stat().st_size > 10_000 and svg.stat().st_size > 10_000, stem
        _assert_real_image(png)
        text = re.sub(r"\s+", " ", _svg_text(svg))
        # every figure states its n, its dataset and that these weights are random init
        assert re.search(r"n = \d+ models?, \d+(-\d+)? images", text), (stem, text[:300])
        assert "sample-test" in text and "RANDOM-INIT" in text, (stem, text[:300])
        assert "NO DATA" not in text and "FAILED" not in text, (stem, text[:300])
    assert sorted(p.stem for p in report.glob("*.png")) == sorted(FIGURES)


def test_index_html_references_every_figure_and_table(report, sweep_root):
    page = _page(report)
    assert sorted(page.imgs) == sorted(f"{s}.png" for s in FIGURES)
    assert {f"{s}.svg" for s in FIGURES} <= set(page.links)
    for ref in page.imgs + page.links:  # self-contained: relative paths to files inside DIR
        assert "://" not in ref and not ref.startswith("/") and (report / ref).is_file(), ref
    assert "placeholder" not in page.classes and "figure-error" not in page.classes and "error" not in page.classes
    assert {f"table-{a}" for a in ANALYSES} <= set(page.ids)
    text = " ".join(page.text)
    assert str(sweep_root) in text  # unescaped back by the parser: the raw page escapes it
    raw = (report / "index.html").read_text(encoding="utf-8")
    assert "results &lt;&amp;&gt; x" in raw and "<&>" not in raw
    for needle in ("generated (UTC)", "Sweeps", "torch", "timm", "matplotlib", "random-init"):
        assert needle in text, needle
    for name in ANALYSES:
        assert (report / "tables" / f"{name}.csv").stat().st_size > 100, name
    alt = pd.read_csv(report / "tables" / "alt_summary.csv")  # with StyleGAN3's pooled EQ statistic
    assert "table-alt_summary" in page.ids and set(alt["metric"]) == set(ALT)
    eq = alt["metric"].str.startswith("eq_")
    assert alt.loc[eq, "pooled_value"].notna().all() and alt.loc[~eq, "pooled_value"].isna().all()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_page_opens_in_headless_browser(report):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium; .ci/run installs it)")
    url = (report / "index.html").resolve().as_uri()
    flags = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=2000",
    ]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stdout[:500]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-images-ok") == "true", attrs  # every <img> loaded: naturalWidth > 0
    assert attrs.get("data-images-total") == str(len(FIGURES)), attrs
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # no script errors, no console messages

    shot = report.parent / "screenshot.png"
    run = subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1280,4000", "--hide-scrollbars", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    px = _assert_real_image(shot, (1280, 4000))
    # the figures are drawn: plenty of non-white rows all the way down the first screenful
    inked = (px < 200).any(axis=2).any(axis=1)
    assert inked[:1000].mean() > 0.3 and inked[1000:4000].mean() > 0.3, (inked[:1000].mean(), inked[1000:].mean())


def test_placeholders_when_nothing_matches(sweep_root, tmp_path, capsys):
    # the sweep is random-init only: a pretrained report has no data, yet writes every file and says why
    out = tmp_path / "pretrained"
    assert main(["report", "-r", str(sweep_root), "--out", str(out), "--n-boot", "50"]) == 0
    for stem in FIGURES:
        _assert_real_image(out / f"{stem}.png")
        text = _svg_text(out / f"{stem}.svg")
        assert "NO DATA" in text and "--weights-filter random" in text, (stem, text[:400])
    page = _page(out)
    assert page.classes.count("placeholder") == len(FIGURES)
    assert "only random-init results" in " ".join(page.text)
    assert "placeholder" in capsys.readouterr().out


def test_missing_families_and_roles_give_placeholders(sweep_root, tmp_path, monkeypatch):
    # the BlurPool / plain pair has LEE on the test set only: no layerwise, no alt, one role
    checked = ("fig1_lee_vs_top1", "fig6a_antialiasing", "fig7_gap")
    _only_figures(monkeypatch, *checked)
    out = tmp_path / "pair"
    args = ["report", "-r", str(sweep_root), "--out", str(out), "--weights-filter", "random", "--n-boot", "50"]
    assert main([*args, "-d", "sample-ood"]) == 0
    text = {stem: _svg_text(out / f"{stem}.svg") for stem in checked}
    assert "NO DATA" not in text["fig1_lee_vs_top1"]
    assert "NO DATA" in text["fig6a_antialiasing"] and "resnetblur50" in text["fig6a_antialiasing"]
    assert "NO DATA" in text["fig7_gap"] and "-d sample" in text["fig7_gap"]


def test_bad_arguments_name_the_problem(sweep_root, tmp_path, capsys):
    assert main(["report", "-r", str(sweep_root), "--out", str(tmp_path / "x"), "-d", "imagenet-val"]) == 2
    err = capsys.readouterr().err
    assert "imagenet-val" in err and "sample-test" in err
    assert main(["report", "-r", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")]) == 2
    assert "no results" in capsys.readouterr().err


def test_report_of_planted_pretrained_store(planted, tmp_path):
    # 72 pretrained ('hub') models in three families with train/test/OOD and alternative metrics (no Ray)
    out = tmp_path / "planted"
    assert main(["report", "-r", planted.root, "--catalog", planted.catalog, "--out", str(out), "--n-boot", "100"]) == 0
    text = {stem: re.sub(r"\s+", " ", _svg_text(out / f"{stem}.svg")) for stem in FIGURES}
    with_data = [
        "fig1_lee_vs_top1",
        "fig5a_generators_vs_top1",
        "fig5b_alt_metrics_vs_top1",
        "fig6b_scale_within_family",
        "fig6c_pretraining_data",
        "fig7_gap",
    ]
    for stem in with_data:
        assert "NO DATA" not in text[stem] and "pretrained weights" in text[stem], (stem, text[stem][:300])
        assert "RANDOM" not in text[stem]
    assert "n = 72 models, 16 images each" in text["fig1_lee_vs_top1"]
    for stem in ("fig4a_layerwise_cumulative", "fig4b_layer_type_shares"):
        assert "NO DATA" in text[stem] and "--metrics lee,layerwise" in text[stem], text[stem][:300]
    assert "NO DATA" in text["fig6a_antialiasing"] and "resnetblur50.bt_in1k" in text["fig6a_antialiasing"]
    assert "NO DATA" in text["fig8_where_lee_lives"] and "--metrics explain" in text["fig8_where_lee_lives"]


def test_a_failing_figure_is_shown_and_the_rest_written(sweep_root, tmp_path, monkeypatch, capsys):
    import pipelines.analysis.figures as F

    def boom(*args, **kwargs):
        raise RuntimeError("boom <b>")

    monkeypatch.setattr(F, "lee_vs_top1", boom)
    # the failing first figure and three after it, of the other families (each drawn from its own rows)
    drawn = ("fig1_lee_vs_top1", "fig4a_layerwise_cumulative", "fig5b_alt_metrics_vs_top1", "fig8_where_lee_lives")
    _only_figures(monkeypatch, *drawn)
    out = tmp_path / "err"
    assert (
        main(["report", "-r", str(sweep_root), "--out", str(out), "--weights-filter", "random", "--n-boot", "50"]) == 1
    )
    assert "fig1_lee_vs_top1" in capsys.readouterr().err
    assert "FIGURE FAILED" in _svg_text(out / "fig1_lee_vs_top1.svg")
    page = _page(out)
    assert page.classes.count("figure-error") == 1 and "placeholder" not in page.classes
    assert "boom &lt;b&gt;" in (out / "index.html").read_text(encoding="utf-8")
    assert all((out / f"{s}.png").is_file() for s in drawn)


# ---- one output configuration per report (probs / logits, cubic / spectral) ------------------------------

CONFIG_MODELS = {"resnet18.a1_in1k": 1.0, "vit_small_patch16_224.augreg_in21k_ft_in1k": 2.0}
"""Planted per-model probs LEE; the logits LEE is 100 times it, the spectral (probs) LEE 10 times it."""


def _config_store(root: Path, outputs: tuple[str, ...] = ("probs", "logits"), spectral: bool = True) -> str:
    """Both models with a lee unit per output (cubic) and a spectral probs one, an alt unit per output."""
    from pipelines.store.results import Store
    from tests.analysis.conftest import lee_columns, write_unit

    store, n = Store(str(root)), 4
    for model, base in CONFIG_MODELS.items():
        configs = [(o, "cubic", base * (100.0 if o == "logits" else 1.0)) for o in outputs]
        if spectral:
            configs.append(("probs", "spectral", base * 10.0))
        for output, interp, value in configs:
            cols = {
                **lee_columns(np.full((n, 2), value), ["rotate", "translate_x"]),
                "output": [output] * 2 * n,
                "interpolation": [interp] * 2 * n,
            }
            write_unit(
                store,
                "lee",
                model,
                "sample-test",
                "test",
                cols,
                config={"generators": ["rotate", "translate_x"], "output": output, "interpolation": interp},
            )
        for output in outputs:
            cols = {
                "sample_id": [f"img{i}" for i in range(n)],
                "sample_index": list(range(n)),
                "metric": ["eq_t"] * n,
                "value": [base * (100.0 if output == "logits" else 1.0)] * n,
                "higher_is_better": [False] * n,
            }
            write_unit(store, "alt", model, "sample-test", "test", cols, config={"metrics": ["eq_t"], "output": output})
    return str(root)


def _spy(monkeypatch, names: tuple[str, ...]) -> dict[str, list]:
    """Wrap these figure functions: every (frame, context) the report hands them, by name."""
    import pipelines.analysis.figures as F

    seen: dict[str, list] = {}

    def wrap(name, fn):
        def spy(df, ctx, *a, **k):
            seen.setdefault(name, []).append((df.copy(), ctx))
            return fn(df, ctx, *a, **k)

        return spy

    for name in names:
        monkeypatch.setattr(F, name, wrap(name, getattr(F, name)))
    return seen


@pytest.fixture
def drawn(monkeypatch):
    """The frames the report hands to fig1 and fig5b, by figure."""
    return _spy(monkeypatch, ("lee_vs_top1", "alt_vs_top1"))


def _fig1_values(frame) -> dict[tuple[str, str], float]:
    assert not frame.duplicated(["model", "generator"]).any(), frame  # one point per model and generator
    return {(r.model, r.generator): r.mean_lee for r in frame.itertuples()}


def test_report_shows_one_output_configuration(tmp_path, drawn, monkeypatch):
    _only_figures(
        monkeypatch,
        "fig1_lee_vs_top1",
        "fig5a_generators_vs_top1",
        "fig5b_alt_metrics_vs_top1",
        "fig6b_scale_within_family",
    )
    root = _config_store(tmp_path / "results")
    out = tmp_path / "probs"
    assert main(["report", "-r", root, "--out", str(out), "--n-boot", "50"]) == 0
    ((fig1, _),) = drawn["lee_vs_top1"]
    assert _fig1_values(fig1) == {(m, g): v for m, v in CONFIG_MODELS.items() for g in ("rotate", "translate_x")}
    ((alt, _),) = drawn["alt_vs_top1"]
    assert sorted(alt["mean_value"]) == sorted(CONFIG_MODELS.values())
    for stem in ("fig1_lee_vs_top1", "fig5a_generators_vs_top1", "fig6b_scale_within_family"):
        text = re.sub(r"\s+", " ", _svg_text(out / f"{stem}.svg"))
        assert "output probs · cubic interpolation" in text and "n = 2 models, 4 images each" in text, text[:400]
    assert "output probs" in re.sub(r"\s+", " ", _svg_text(out / "fig5b_alt_metrics_vs_top1.svg"))
    page = re.sub(r"\s+", " ", " ".join(_page(out).text))
    assert "probs: class probabilities" in page and "cubic (liecore" in page
    assert "--output-kind logits" in page and "--derivative-interp spectral" in page  # the other configurations
    summary = pd.read_csv(out / "tables" / "lee_summary.csv")
    assert set(summary["output"]) == {"probs"} and set(summary["interpolation"]) == {"cubic"} and len(summary) == 4
    for name in ("accuracy", "agreement"):  # the analyses' rows of other configurations are left out
        table = pd.read_csv(out / "tables" / f"{name}.csv")
        if "output" in table:
            assert set(table["output"].dropna()) <= {"probs"}, name
        if "interpolation" in table:
            assert set(table["interpolation"].dropna()) <= {"cubic"}, name

    drawn.clear()
    out = tmp_path / "logits"
    assert main(["report", "-r", root, "--out", str(out), "--n-boot", "50", "--output-kind", "logits"]) == 0
    ((fig1, _),) = drawn["lee_vs_top1"]
    assert _fig1_values(fig1) == {(m, g): 100 * v for m, v in CONFIG_MODELS.items() for g in ("rotate", "translate_x")}
    ((alt, _),) = drawn["alt_vs_top1"]
    assert sorted(alt["mean_value"]) == sorted(100 * v for v in CONFIG_MODELS.values())
    assert "output logits · cubic interpolation" in re.sub(r"\s+", " ", _svg_text(out / "fig1_lee_vs_top1.svg"))
    page = " ".join(_page(out).text)
    assert "logits: logits" in page and "--output-kind logits" in (out / "index.html").read_text(encoding="utf-8")

    drawn.clear()
    out = tmp_path / "spectral"
    assert main(["report", "-r", root, "--out", str(out), "--n-boot", "50", "--derivative-interp", "spectral"]) == 0
    assert _fig1_values(drawn["lee_vs_top1"][0][0]) == {
        (m, g): 10 * v for m, v in CONFIG_MODELS.items() for g in ("rotate", "translate_x")
    }


def test_placeholder_names_the_output_that_has_results(tmp_path, monkeypatch):
    _only_figures(monkeypatch, "fig1_lee_vs_top1", "fig5b_alt_metrics_vs_top1")
    root = _config_store(tmp_path / "results", outputs=("logits",), spectral=False)
    out = tmp_path / "probs"
    assert main(["report", "-r", root, "--out", str(out), "--n-boot", "50"]) == 0
    for stem in ("fig1_lee_vs_top1", "fig5b_alt_metrics_vs_top1"):
        text = re.sub(r"\s+", " ", _svg_text(out / f"{stem}.svg"))
        assert "NO DATA" in text and "--output-kind logits" in text and "none has output probs" in text, (stem, text)
    page = " ".join(_page(out).text)
    assert "no results with output probs" in page and "--output-kind logits" in page
    assert (
        main(
            [
                "report",
                "-r",
                root,
                "--out",
                str(tmp_path / "s"),
                "--n-boot",
                "50",
                "--output-kind",
                "logits",
                "--derivative-interp",
                "spectral",
            ]
        )
        == 0
    )
    text = re.sub(r"\s+", " ", _svg_text(tmp_path / "s" / "fig1_lee_vs_top1.svg"))
    assert "NO DATA" in text and "--output-kind logits --derivative-interp cubic" not in text  # cubic is the default
    assert "lee report --results" in text and "none with spectral interpolation" in text, text


def test_layerwise_figures_draw_one_configuration_per_model(tmp_path, monkeypatch):
    # probs / logits exact layerwise units and a stochastic probs one of the same model (conftest)
    from tests.analysis.conftest import write_two_configurations

    root = str(tmp_path / "results")
    write_two_configurations(root)
    seen = _spy(monkeypatch, ("layerwise_cumulative", "layer_type_shares"))
    _only_figures(monkeypatch, "fig4a_layerwise_cumulative", "fig4b_layer_type_shares")
    for output, conv in (("probs", 0.9), ("logits", 0.1)):
        out = tmp_path / output
        assert main(["report", "-r", root, "--out", str(out), "--n-boot", "20", "--output-kind", output]) == 0
        shares, ctx = seen["layer_type_shares"][-1]
        assert not shares.duplicated(["model", "generator", "layer_type"]).any(), shares
        assert set(shares["method"]) == {"exact"} and f"output {output}" in ctx.config and "exact" in ctx.config
        by_type = shares.set_index("layer_type")["share_fraction"]
        assert by_type["convolution"] == pytest.approx(conv) and by_type.sum() == pytest.approx(1.0)
        cum, _ = seen["layerwise_cumulative"][-1]
        assert not cum.duplicated(["model", "generator", "layer"]).any(), cum
        text = re.sub(r"\s+", " ", _svg_text(out / "fig4b_layer_type_shares.svg"))
        assert f"output {output} · cubic interpolation · exact decomposition" in text, text[:400]


def test_page_names_the_models_that_fell_back_to_random_init(tmp_path, monkeypatch):
    """A hub model run offline under --weights auto (random init) is named on the page, apart from a model
    that is random-init by request, and from a model with pretrained results."""
    import json

    from pipelines.store.results import Store
    from tests.analysis.conftest import lee_columns, runs_row, write_unit

    store, n = Store(str(tmp_path / "results")), 4
    kinds = {
        "resnet18.a1_in1k": ("hub", "hub"),
        "vit_small_patch16_224.augreg_in21k_ft_in1k": ("random", "hub"),
        "test_resnet.r160_in1k": ("random", "random"),
    }
    for model, (weights, source) in kinds.items():
        cols = lee_columns(np.full((n, 1), 1.0), ["rotate"])
        unit = write_unit(
            store,
            "lee",
            model,
            "sample-test",
            "test",
            cols,
            status=None,
            weights=weights,
            config={"generators": ["rotate"], "output": "probs", "interpolation": "cubic"},
        )
        row = runs_row(unit, "lee", model, "sample-test", "test", weights=weights, n_images=n, n_rows=n)
        row["key_json"] = json.dumps(
            {"model": {"name": model, "source": source}, "weights": weights}, sort_keys=True, separators=(",", ":")
        )
        store.write_run(row)
    _only_figures(monkeypatch, "fig1_lee_vs_top1")  # the page's text is checked, no figure
    out = tmp_path / "report"
    assert main(["report", "-r", str(store.uri), "--out", str(out), "--n-boot", "50"]) == 0
    page = re.sub(r"\s+", " ", " ".join(_page(out).text))
    assert "1 model(s) ran on random init because the hub was offline or unreachable" in page, page
    assert "were not cached): vit_small_patch16_224.augreg_in21k_ft_in1k. Rerun lee eval online" in page
    assert (
        "1 model(s) have random-init results only (random init asked for, or random-init specs): "
        "test_resnet.r160_in1k." in page
    )
    assert "resnet18.a1_in1k" not in page.split("Random-init models in this root")[1].split("pretrained report")[0]
