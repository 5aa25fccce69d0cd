"""The named analyses recover planted truth (tests/analysis/conftest.py: ``planted``), keep weights apart,
and fall back to random-init results only when there is nothing else, saying so.

Intervals are 95% intervals, so each covers the truth with probability about 0.95; the store is drawn
with a fixed seed, and where many intervals are checked at once the test asks for the coverage rate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipelines.analysis import analyses
from pipelines.analysis.analyses import ANALYSES, COLUMNS, anti_alias_pairs, run_analysis
from pipelines.analysis.views import connect
from pipelines.store.results import Store

from .conftest import TRUTH, lee_columns, write_two_configurations, write_unit

N_BOOT = 1000


def _covers(row: pd.Series, truth: float) -> bool:
    return row["ci_low"] <= truth <= row["ci_high"]


def _inside(df: pd.DataFrame) -> bool:
    """Every finite estimate lies inside its own interval."""
    d = df[np.isfinite(df["ci_low"]) & np.isfinite(df["ci_high"])]
    return bool(((d["ci_low"] <= d["estimate"] + 1e-12) & (d["estimate"] <= d["ci_high"] + 1e-12)).all())


@pytest.fixture(scope="module")
def accuracy_table(planted_con) -> pd.DataFrame:
    return analyses.accuracy(planted_con, dataset="synth-test", n_boot=N_BOOT)


def test_every_analysis_returns_the_tidy_columns(planted_con):
    for name in ANALYSES:
        df = run_analysis(planted_con, name, dataset="synth-test", generator="rotate", n_boot=50)
        assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS), name
        # train / ood images, layerwise rows, explain rows (tests/pipelines/test_explain_family.py): other tests
        if name not in ("gap", "layerwise", "border_share", "layer_location", "texture"):
            assert len(df) and (df["analysis"] == name).all() and (df["weights"] == "pretrained").all(), name
            assert _inside(df), name
    with pytest.raises(ValueError, match="did you mean 'accuracy'"):
        run_analysis(planted_con, "acuracy")


def test_accuracy_correlations_recover_the_planted_rho(accuracy_table, planted):
    t = TRUTH
    # within a family (ln LEE, top-1) is bivariate normal by construction
    var_x = t["top1_sd"] ** 2
    var_noise = (
        (t["c"] * t["log10_params_sd"]) ** 2
        + t["sigma_model"] ** 2
        + t["recipe_b"] ** 2 / 4
        + (math.exp(t["sigma_image"] ** 2) - 1) / t["n_images"]
    )
    rho = t["b"] * math.sqrt(var_x) / math.sqrt(t["b"] ** 2 * var_x + var_noise)
    rho_s = 6 / math.pi * math.asin(rho / 2)
    fam = accuracy_table[accuracy_table.scope == "family"]
    assert set(fam["family"]) == {"cnn", "hybrid", "vit"} and (fam["n"] == t["models_per_family"]).all()
    pear, spear = fam[fam.statistic == "pearson_r"], fam[fam.statistic == "spearman_rho"]
    covered = [_covers(r, rho) for _, r in pear.iterrows()] + [_covers(r, rho_s) for _, r in spear.iterrows()]
    assert sum(covered) >= len(covered) - 1, (rho, rho_s, fam)
    # pooled over families the family offsets add variance: a weaker, still negative correlation
    f = np.array(list(t["family"].values()))
    rho_all = t["b"] * math.sqrt(var_x) / math.sqrt(t["b"] ** 2 * var_x + var_noise + f.var())
    overall = accuracy_table[(accuracy_table.scope == "overall") & (accuracy_table.statistic == "pearson_r")]
    assert len(overall) == 2 and all(_covers(r, rho_all) for _, r in overall.iterrows())
    assert (overall["ci_high"] < 0).all() and (overall["n"] == 3 * t["models_per_family"]).all()
    assert _inside(accuracy_table)


def test_accuracy_regression_recovers_slope_and_family_effects(accuracy_table):
    reg = accuracy_table[accuracy_table.scope == "regression"]
    for gen, g in reg.groupby("generator"):
        coef = g[g.statistic == "coef"].set_index("term")
        assert _covers(coef.loc["top1"], TRUTH["b"]), gen
        for fam in ("hybrid", "vit"):  # against the reference family, cnn (ties: alphabetical)
            assert _covers(coef.loc[f"family[{fam}] - family[cnn]"], TRUTH["family"][fam] - TRUTH["family"]["cnn"])
        F = g[g.statistic == "F"].iloc[0]
        assert F["estimate"] > 20 and F["p_value"] < 1e-6 and "F(2, 68)" in F["method"]


def test_family_f_test_has_no_power_without_a_family_effect(tmp_path):
    """Negative control: families that do not differ once accuracy is accounted for give a large p."""
    rng = np.random.default_rng(7)
    root = str(tmp_path / "r")
    s = Store(root)
    models = []
    for fam in ("cnn", "vit"):
        for i in range(15):
            top1 = 75 + rng.normal(0, 4)
            mu = -8 - 0.1 * (top1 - 75) + rng.normal(0, 0.2)
            name = f"{fam}_{i:02d}"
            models.append({"name": name, "arch": "resnet50", "family": fam, "top1": top1})
            write_unit(
                s, "lee", name, "synth-test", "test", lee_columns(np.exp(mu + rng.normal(0, 0.1, (8, 1))), ["rotate"])
            )
    from .conftest import write_catalog

    cat = write_catalog(tmp_path / "c.yaml", models)
    con = connect(root, catalogs=[cat], threads=1)
    df = analyses.accuracy(con, n_boot=200)
    F = df[df.statistic == "F"].iloc[0]
    assert F["p_value"] > 0.05
    assert _covers(df[df.term == "top1"].iloc[0], -0.1)
    con.close()


def test_scale_recovers_size_and_recipe_effects(planted_con):
    df = analyses.scale(planted_con, dataset="synth-test", n_boot=N_BOOT)
    size = df[(df.term == "log10 params_m") & (df.scope == "within-family")]
    assert len(size) == 2 and all(_covers(r, TRUTH["c"]) for _, r in size.iterrows())
    assert (size["ci_low"] > 0).all() and (size["n"] == 72).all()
    per_family = df[(df.term == "log10 params_m") & (df.scope == "family")]
    assert len(per_family) == 6 and sum(_covers(r, TRUTH["c"]) for _, r in per_family.iterrows()) >= 5
    # recipe 'b' models have ln LEE lower by 0.4; each arch has one model of each recipe, so the
    # deviation from the arch mean is -0.2 for 'b' and +0.2 for 'a'
    rec = df[df.statistic == "recipe_effect"].set_index(["generator", "term"])
    assert (rec["n"] == 36).all() and (rec["n_of"] == "groups").all()  # 3 families x 12 archs, one pair each
    for gen in ("rotate", "translate_x"):
        assert _covers(rec.loc[(gen, "recipe=b")], TRUTH["recipe_b"] / 2)
        assert _covers(rec.loc[(gen, "recipe=a")], -TRUTH["recipe_b"] / 2)
    # an arch's two models differ in recipe, never only in data: no data-size comparison to make
    # (test_scale_compares_like_with_like_on_a_zoo_grid has one)
    assert df[df.term == "log10 pretrain_images"].empty
    assert _inside(df)


ZOO = {
    "params": {"s": 0.025, "m": 0.096, "l": 0.377},  # millions; model_kwargs width 16 / 32 / 64
    "c": -0.3,  # d ln LEE / d log10 params, same recipe and data
    "d": 1.0,  # d ln LEE / d log10 training images, same model and recipe
    "recipe": {"none": 0.0, "rotate": -1.0, "translate": -0.8, "strong": -1.4},
    "seeds": {"none": 3, "rotate": 3, "translate": 2, "strong": 2},
}


@pytest.fixture(scope="module")
def zoo_grid(tmp_path_factory):
    """A model-zoo-like grid, every model arch ``zoo_cnn``: recipe 'none' at widths s/m/l trained on 300 and
    1,200 digits; the other recipes at width s on 1,200 digits only, with unequal seed counts. ln LEE =
    c log10 params + d log10 train_n + recipe offset + 0.01 noise. Pooling every model of the arch (or
    family) confounds width with recipe and data: the parameter slope over all 25 models is positive."""
    rng = np.random.default_rng(5)
    base = tmp_path_factory.mktemp("zoo")
    root = str(base / "r")
    s = Store(root)
    widths = {"s": 16, "m": 32, "l": 64}
    models = []
    for recipe, n_seeds in ZOO["seeds"].items():
        for size in widths if recipe == "none" else ["s"]:
            for n in (300, 1200) if recipe == "none" else (1200,):
                for seed in range(n_seeds):
                    name = f"zoo_cnn_{size}_{recipe}_n{n}_s{seed}"
                    mu = (
                        -3
                        + ZOO["c"] * math.log10(ZOO["params"][size])
                        + ZOO["d"] * math.log10(n)
                        + ZOO["recipe"][recipe]
                        + rng.normal(0, 0.01)
                    )
                    write_unit(
                        s,
                        "lee",
                        name,
                        "digits-test",
                        "test",
                        lee_columns(np.full((4, 1), math.exp(mu)), ["rotate"]),
                        weights="file",
                        config={"generators": ["rotate"], "output": "probs", "interpolation": "cubic"},
                    )
                    models.append(
                        {
                            "name": name,
                            "arch": "zoo_cnn",
                            "family": "cnn",
                            "params_m": ZOO["params"][size],
                            "pretrain_data": "digits",
                            "recipe": recipe,
                            "model_kwargs": {"width": widths[size]},
                            "training": {
                                "task": "digits",
                                "size": size,
                                "train_n": n,
                                "recipe": recipe,
                                "seed": seed,
                                "key": f"key-{name}",
                                "pretrain": None,
                            },
                        }
                    )
    # not evaluated: a ViT pretrained on 2,000 photo patches and fine-tuned on 1,200 digits (model_rows)
    models.append(
        {
            "name": "zoo_vit_s_none_patches",
            "arch": "zoo_vit",
            "family": "vit",
            "pretrain_data": "patches",
            "recipe": "none",
            "training": {"task": "patches", "train_n": 2000, "key": "key-pre", "pretrain": None},
        }
    )
    models.append(
        {
            "name": "zoo_vit_s_rotate_ft",
            "arch": "zoo_vit",
            "family": "vit",
            "pretrain_data": "patches",
            "recipe": "rotate",
            "training": {"task": "digits", "train_n": 1200, "key": "key-ft", "pretrain": "key-pre"},
        }
    )
    from .conftest import write_catalog

    return root, str(write_catalog(base / "zoo.yaml", models))


def test_zoo_training_set_size_reaches_the_models_table(zoo_grid):
    root, cat = zoo_grid
    from pipelines.analysis.views import model_rows

    rows = {
        r["model"]: r
        for r in model_rows(
            ["zoo_cnn_s_none_n300_s0", "zoo_cnn_m_none_n1200_s1", "zoo_vit_s_none_patches", "zoo_vit_s_rotate_ft"],
            catalogs=[cat],
        )
    }
    assert rows["zoo_cnn_s_none_n300_s0"]["pretrain_images"] == 300
    assert rows["zoo_cnn_s_none_n300_s0"]["train_images"] == 300
    assert rows["zoo_cnn_m_none_n1200_s1"]["pretrain_images"] == 1200
    assert rows["zoo_cnn_m_none_n1200_s1"]["model_kwargs"] == '{"width": 32}'
    # fine-tuned: the first stage is the pretrained model's 2,000 patches, the last the 1,200 digits
    ft = rows["zoo_vit_s_rotate_ft"]
    assert (ft["pretrain_data"], ft["pretrain_images"], ft["train_images"]) == ("patches", 2000, 1200)
    assert rows["zoo_vit_s_none_patches"]["pretrain_images"] == 2000
    # and figure 6c draws the two digit set sizes as two ticks
    from pipelines.analysis import figures as F

    con = connect(root, catalogs=[cat], threads=1)
    lee = con.sql("SELECT * FROM lee_summary").df()
    con.close()
    fig = F.pretraining_data(lee, F.FigureContext(dataset="digits-test", weights="trained"))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["digits (300)", "digits (1.2k)"]


def test_scale_compares_like_with_like_on_a_zoo_grid(zoo_grid):
    root, cat = zoo_grid
    con = connect(root, catalogs=[cat], threads=1)
    df = analyses.scale(con, n_boot=50)
    con.close()
    slope = df[df.statistic == "slope"].set_index(["term", "scope"])
    # the parameter slope within equal recipe and data (recipe none, 300 and 1,200 digits: 18 models)
    for scope in ("family", "within-family"):
        size = slope.loc[("log10 params_m", scope)]
        assert _covers(size, ZOO["c"]) and size["ci_high"] < 0 and size["n"] == 18, size
        assert "equal recipe and training data" in size["method"]
        data = slope.loc[("log10 pretrain_images", scope)]  # the training-set size, within equal models
        assert _covers(data, ZOO["d"]) and data["ci_low"] > 0 and data["n"] == 18, data
    # recipe effects within width s / 1,200 digits only, against the mean over recipes (not over models:
    # 'none' and 'rotate' have 3 seeds, 'translate' and 'strong' 2)
    rec = df[df.statistic == "recipe_effect"].set_index("term")
    center = np.mean(list(ZOO["recipe"].values()))
    assert set(rec.index) == {f"recipe={r}" for r in ZOO["recipe"]}
    for r, effect in ZOO["recipe"].items():
        row = rec.loc[f"recipe={r}"]
        assert row["estimate"] == pytest.approx(effect - center, abs=0.03), row  # over models: 0.06 off
        assert row["n"] == ZOO["seeds"][r] and row["n_of"] == "models" and "(1 group)" in row["method"]
    assert sum(_covers(rec.loc[f"recipe={r}"], e - center) for r, e in ZOO["recipe"].items()) >= 3
    assert _inside(df)


def test_anti_aliasing_ratio(tmp_path):
    rng = np.random.default_rng(3)
    root = str(tmp_path / "r")
    s = Store(root)
    base = np.exp(rng.normal(-8, 0.5, (40, 1)))  # the same 40 images for both models
    write_unit(s, "lee", "resnet50.a1_in1k", "sample-test", "test", lee_columns(base, ["rotate"]))
    blurred = base * 0.6 * np.exp(rng.normal(0, 0.05, base.shape))
    write_unit(s, "lee", "resnetblur50.bt_in1k", "sample-test", "test", lee_columns(blurred, ["rotate"]))
    write_unit(
        s, "lee", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "sample-test", "test", lee_columns(base, ["rotate"])
    )
    con = connect(root, threads=1)
    df = analyses.scale(con, n_boot=N_BOOT)
    ratio = df[df.statistic == "ratio"]
    assert len(ratio) == 1
    r = ratio.iloc[0]
    assert (r["model"], r["reference"], r["family"], r["n"]) == ("resnetblur50.bt_in1k", "resnet50.a1_in1k", "cnn", 40)
    assert _covers(r, 0.6) and r["ci_high"] - r["ci_low"] < 0.05 and "paired" in r["method"]
    con.close()
    arch = pd.DataFrame(
        {
            "model": [
                "resnetblur50.bt_in1k",
                "resnet50.a1_in1k",
                "resnet50.tv_in1k",
                "mobilenetv4_conv_blur_medium.e500_r224_in1k",
                "mobilenetv4_conv_medium.x",
                "densenetblur121d.ra_in1k",
                "vit_x",
            ],
            "arch": [
                "resnetblur50",
                "resnet50",
                "resnet50",
                "mobilenetv4_conv_blur_medium",
                "mobilenetv4_conv_medium",
                "densenetblur121d",
                None,
            ],
        }
    )
    assert anti_alias_pairs(arch) == [
        ("mobilenetv4_conv_blur_medium.e500_r224_in1k", "mobilenetv4_conv_medium.x"),
        ("resnetblur50.bt_in1k", "resnet50.a1_in1k"),
        ("resnetblur50.bt_in1k", "resnet50.tv_in1k"),
    ]


def test_gap_recovers_the_planted_ratios(planted_con):
    df = analyses.gap(planted_con, n_boot=N_BOOT)
    truth = {"ood/test": TRUTH["gap_ood"], "train/test": TRUTH["gap_train"]}
    models = df[(df.statistic == "ratio") & (df.scope == "model")]
    n_gap = 3 * TRUTH["gap_models_per_family"]
    assert len(models) == n_gap * 2 * 2  # models x generators x {train, ood}
    covered = np.mean([_covers(r, truth[r["term"]]) for _, r in models.iterrows()])
    assert covered >= 0.85, covered  # nominal 0.95
    fam = df[df.scope == "family"]
    assert len(fam) == 3 * 2 * 2 and (fam["n"] == TRUTH["gap_models_per_family"]).all()
    assert all(_covers(r, truth[r["term"]]) for _, r in fam.iterrows()), fam
    means = df[df.statistic == "mean_lee"]
    assert set(means["role"]) == {"train", "test", "ood"} and (means["n"] == TRUTH["n_images"]).all()
    assert _inside(df)


def test_agreement_finds_perfect_and_no_agreement(planted_con):
    df = analyses.agreement(planted_con, n_boot=N_BOOT).set_index(["generator", "metric"])
    perfect = df.loc[("rotate", "err_like")]
    assert perfect["estimate"] == pytest.approx(1.0) and perfect["ci_low"] == pytest.approx(1.0)
    assert perfect["n"] == 36 and perfect["agreement"] == pytest.approx(1.0)
    assert df.loc[("translate_x", "err_like"), "ci_low"] > 0.9
    for gen in ("rotate", "translate_x"):
        assert _covers(df.loc[(gen, "unrelated")], 0.0)


@pytest.fixture(scope="module")
def layer_store(tmp_path_factory):
    """4 models x 12 images: layer-type shares drawn around planted fractions."""
    rng = np.random.default_rng(11)
    root = str(tmp_path_factory.mktemp("lw") / "r")
    s = Store(root)
    layers = [
        ("stem", "Conv2d", "convolution"),
        ("bn", "BatchNorm2d", "normalization"),
        ("act", "ReLU", "activation"),
        ("pool", "MaxPool2d", "downsampling"),
        ("conv2", "Conv2d", "convolution"),
        ("fc", "Linear", "linear"),
    ]
    frac = np.array([0.3, 0.1, 0.2, 0.05, 0.2, 0.1, 0.05])  # per layer, then unattributed
    truth = {
        "convolution": 0.5,
        "normalization": 0.1,
        "activation": 0.2,
        "downsampling/pooling": 0.05,
        "MLP": 0.1,
        "unattributed": 0.05,
    }
    cfg = {"generators": ["rotate"], "method": "exact", "output": "probs", "interpolation": "cubic"}
    n_img, k = 12, len(layers)
    models = ["resnet18.a1_in1k", "resnet34.a1_in1k", "resnet50.a1_in1k", "resnet101.a1_in1k"]
    for m in models:
        e2e = np.exp(rng.normal(-8, 0.5, n_img))
        w = rng.dirichlet(frac * 400, size=n_img)
        cols: dict[str, list] = {
            c: []
            for c in (
                "sample_id",
                "sample_index",
                "generator",
                "kind",
                "layer",
                "layer_class",
                "call_index",
                "layer_kind",
                "value",
                "share",
            )
        }
        for i in range(n_img):
            rows = [(name, cls, j, kind, "layer", w[i, j] * e2e[i]) for j, (name, cls, kind) in enumerate(layers)]
            rows += [
                ("<end_to_end>", "", -1, "end_to_end", "end_to_end", e2e[i]),
                ("<unattributed>", "", -1, "unattributed", "unattributed", w[i, k] * e2e[i]),
            ]
            for name, cls, j, lkind, kind, share in rows:
                for c, v in zip(
                    cols, (f"img{i}", i, "rotate", kind, name, cls, j, lkind, abs(share), share), strict=True
                ):
                    cols[c].append(v)
        write_unit(s, "layerwise", m, "sample-test", "test", cols, config=cfg)
    return root, truth, frac


def test_layerwise_recovers_type_shares_and_cumulative(layer_store):
    root, truth, frac = layer_store
    con = connect(root, threads=1)
    df = analyses.layerwise(con, n_boot=N_BOOT)
    shares = df[(df.statistic == "share_fraction") & (df.scope == "model")]
    assert len(shares) == 4 * len(truth)
    sums = shares.groupby("model")["estimate"].sum()
    assert np.allclose(sums, 1.0)  # additive shares: the types plus unattributed are the whole LEE
    covered = np.mean([_covers(r, truth[r["term"]]) for _, r in shares.iterrows()])
    assert covered >= 0.85, shares
    fam = df[(df.statistic == "share_fraction") & (df.scope == "family")].set_index("term")
    assert (fam["n"] == 4).all() and all(_covers(fam.loc[t], v) for t, v in truth.items())
    cum = df[df.statistic == "cumulative_fraction"]
    one = cum[cum.model == "resnet18.a1_in1k"].sort_values("call_index")
    assert list(one["term"]) == ["stem", "bn", "act", "pool", "conv2", "fc"]
    assert np.allclose(one["depth"], np.linspace(0, 1, 6))
    assert np.all(np.diff(one["estimate"]) > 0) and one["estimate"].iloc[-1] == pytest.approx(1 - 0.05, abs=0.03)
    assert all(_covers(r, v) for (_, r), v in zip(one.iterrows(), np.cumsum(frac[:-1]), strict=True))
    # the point estimates agree with the SQL views
    view = con.sql(
        "SELECT layer, cumulative_fraction FROM layerwise_cumulative WHERE model = 'resnet18.a1_in1k' "
        "ORDER BY call_index"
    ).df()
    assert np.allclose(view["cumulative_fraction"], one["estimate"])
    only = analyses.layerwise(con, model="resnet50.a1_in1k", n_boot=50)
    assert set(only.loc[only.scope == "model", "model"]) == {"resnet50.a1_in1k"}
    con.close()


def test_layerwise_keeps_configurations_apart(tmp_path):
    """probs / logits and exact / stochastic results of one model: one set of rows each, fractions sum to 1."""
    root = str(tmp_path / "r")
    write_two_configurations(root)
    con = connect(root, threads=1)
    df = analyses.layerwise(con, n_boot=50)
    con.close()
    shares = df[(df.statistic == "share_fraction") & (df.scope == "model")]
    key = ["output", "interpolation", "layerwise_method"]
    assert len(shares) == 3 * 3 and (shares["n"] == 6).all()
    assert np.allclose(shares.groupby(key)["estimate"].sum(), 1.0)
    got = {
        (o, m, t): e
        for o, m, t, e in shares[["output", "layerwise_method", "term", "estimate"]].itertuples(index=False)
    }
    assert got == pytest.approx(
        {
            ("probs", "exact", "convolution"): 0.9,
            ("probs", "exact", "MLP"): 0.1,
            ("probs", "exact", "unattributed"): 0,
            ("logits", "exact", "convolution"): 0.1,
            ("logits", "exact", "MLP"): 0.9,
            ("logits", "exact", "unattributed"): 0,
            ("probs", "stochastic", "convolution"): 0.5,
            ("probs", "stochastic", "MLP"): 0.4,
            ("probs", "stochastic", "unattributed"): 0.1,
        }
    )
    assert set(shares.loc[shares.layerwise_method == "stochastic", "num_probes"]) == {8}
    assert shares.loc[shares.layerwise_method == "exact", "num_probes"].isna().all()
    assert set(shares["interpolation"]) == {"cubic"}
    fam = df[(df.statistic == "share_fraction") & (df.scope == "family")]
    assert len(fam) == 3 * 3 and (fam["n"] == 1).all()  # one model per configuration, never two
    cum = df[df.statistic == "cumulative_fraction"].sort_values([*key, "call_index"])
    assert list(cum["estimate"]) == pytest.approx([0.1, 1.0, 0.9, 1.0, 0.5, 0.9])


def test_weights_never_mixed_and_random_fallback_is_stated(tmp_path):
    rng = np.random.default_rng(5)
    root = str(tmp_path / "r")
    s = Store(root)
    names = [
        "resnet18.a1_in1k",
        "resnet34.a1_in1k",
        "resnet50.a1_in1k",
        "convnext_atto.d2_in1k",
        "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    ]
    for m in names:  # every model random-init ...
        write_unit(
            s,
            "lee",
            m,
            "sample-test",
            "test",
            lee_columns(np.exp(rng.normal(0, 1, (4, 1))), ["rotate"]),
            weights="random",
        )
    con = connect(root, threads=1)
    df = analyses.accuracy(con, n_boot=50)
    assert (df["weights"] == "random").all() and df["note"].str.contains("random-init results shown").all()
    assert (df.loc[df.scope == "overall", "n"] == 5).all()
    assert (analyses.accuracy(con, weights="random", n_boot=50)["note"] == "").all()
    con.close()
    for m in names[:4]:  # ... and four of them also with trained weights (hub, and a zoo-style file)
        write_unit(
            s,
            "lee",
            m,
            "sample-test",
            "test",
            lee_columns(np.exp(rng.normal(5, 1, (4, 1))), ["rotate"]),
            weights="file" if m == names[0] else "hub",
        )
    con = connect(root, threads=1)
    pre = analyses.accuracy(con, n_boot=50)
    assert (pre["weights"] == "pretrained").all() and (pre["note"] == "").all()
    assert (pre.loc[pre.scope == "overall", "n"] == 4).all()
    rnd = analyses.accuracy(con, weights="random", n_boot=50)
    assert (rnd.loc[rnd.scope == "overall", "n"] == 5).all()
    both = analyses.gap(con, weights="any", n_boot=50)
    assert set(both["model_weights"].dropna()) == {"hub", "file", "random"}
    assert len(both[both.statistic == "mean_lee"]) == 9  # 4 trained + 5 random-init, each its own point
    with pytest.raises(ValueError, match="weights must be one of"):
        analyses.accuracy(con, weights="hub")
    con.close()


def test_bootstrap_statistics_are_exact_per_resample():
    """The counts-based resampled Pearson / Spearman equal scipy's on the expanded resample (ties too)."""
    from scipy import stats as st

    from pipelines.analysis import stats

    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=25), 1)  # ties
    y = x + rng.normal(size=25)
    w = stats.bootstrap_counts(25, 20, rng).astype(float)
    rs = stats.weighted_corr(stats.resample_ranks(x, w), stats.resample_ranks(y, w), w)
    rp = stats.weighted_corr(x, y, w)
    for b in range(20):
        idx = np.repeat(np.arange(25), w[b].astype(int))
        assert rs[b] == pytest.approx(st.spearmanr(x[idx], y[idx]).statistic, abs=1e-12)
        assert rp[b] == pytest.approx(st.pearsonr(x[idx], y[idx]).statistic, abs=1e-12)
    iv = stats.bootstrap_corr(x, y, "spearman", n_boot=500)
    assert iv.low <= iv.estimate <= iv.high and iv.n == 25
    assert math.isnan(stats.bootstrap_corr(x[:3], y[:3]).low)
    assert math.isnan(stats.bootstrap_corr(np.ones(5), y[:5]).estimate)
    r = stats.ratio_of_means(2 * x**2 + 1, x**2 + 0.5, paired=True, n_boot=200)
    assert r.estimate == pytest.approx(2.0) and r.low == pytest.approx(2.0) and r.high == pytest.approx(2.0)
