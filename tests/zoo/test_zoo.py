"""The offline model zoo: data, grid, training (cached, deterministic) and what the measurement sees in it.

Trained-model tests share one ``small`` preset (``small_zoo``: the checkpoints committed under tests/data/zoo-small,
which the first of them checks by training one model again). The numbers they print are the ones the margins were
chosen from (seed 0, two CPU threads).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import catalog
import liecore
from pipelines import zoo
from pipelines.cli import main
from pipelines.spec.families import activation_layouts
from pipelines.zoo.data import augment, load_split
from pipelines.zoo.grid import PRESETS, ZooModelConfig, preset
from pipelines.zoo.train import ZooResult, train_model, train_zoo

N_LEE = 200  # test digits per LEE measurement
# e2cnn 0.2.3 builds its filter bases with uint8 masks, which torch deprecates (harmless)
pytestmark = pytest.mark.filterwarnings("ignore:indexing with dtype torch.uint8:UserWarning")


# ------------------------------------------------------------------------------------------ fast checks
def test_grid_covers_what_the_paper_varies():
    full = PRESETS["full"]
    names = [c.name for c in full]
    assert len(names) == len(set(names))
    assert set(PRESETS["small"]) <= set(full)
    assert {c.family for c in full} == {"cnn", "e2cnn", "vit", "mixer"}
    assert {c.recipe for c in full} == {"none", "translate", "rotate", "strong"}
    assert {c.train_n for c in full} >= {None, 300}
    assert all(len({c.size for c in full if c.family == f}) >= 2 for f in ("cnn", "e2cnn", "vit", "mixer"))
    ft = [c for c in full if c.pretrain]
    assert len(ft) == 1 and ft[0].recipe == "rotate" and ft[0].task == "digits"
    pre = next(c for c in full if c.name == ft[0].pretrain)
    assert pre.task == "patches" and names.index(pre.name) < names.index(ft[0].name)
    # --only keeps the pretrained model a fine-tuned one needs, first
    only = preset("full", ["*-ft"])
    assert [c.name for c in only] == [pre.name, ft[0].name]


def test_zoo_datasets_are_deterministic_and_packaged(zoo_cache):
    first = {n: catalog.load_dataset(n) for n in ("digits-test", "patches-ood")}
    for task, split in (("digits", "test"), ("patches", "ood")):
        zoo.materialize_zoo_data(task, split, force=True)
    for name, imset in first.items():
        again = catalog.load_dataset(name)
        assert again.fingerprint == imset.fingerprint and len(again) == len(imset)
    digits = catalog.load_dataset("digits-train")
    assert len(digits) == 1200 and {im.array.shape for im in digits.images} == {(32, 32, 3)}
    assert sorted({im.label for im in digits.images}) == [str(d) for d in range(10)]
    test_ids = {im.image_id.split("/")[1] for im in catalog.load_dataset("digits-test").images}
    ood_ids = {im.image_id.split("/")[1] for im in catalog.load_dataset("digits-ood").images}
    assert test_ids == ood_ids and not test_ids & {im.image_id.split("/")[1] for im in digits.images}
    assert len({im.label for im in catalog.load_dataset("patches-train").images}) == 7


def test_augmentation_is_seeded_and_rotation_preserves_the_digit_mass(zoo_cache):
    x = load_split("digits", "test").images[:8]
    a = augment(x, "rotate", torch.Generator().manual_seed(1))
    b = augment(x, "rotate", torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x)
    # digits sit inside the frame: a rotation keeps their total intensity (up to bilinear blur at the edges)
    assert torch.allclose(a.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.03)
    assert torch.equal(augment(x, "none", torch.Generator()), x)


@pytest.mark.parametrize("family", ["cnn", "e2cnn", "vit", "mixer"])
def test_every_zoo_architecture_builds_through_the_catalog(family, tmp_path):
    cfg = ZooModelConfig(family, "s")
    spec = catalog.ModelSpec(
        name=f"x-{family}",
        arch=cfg.arch,
        source="random",
        model_kwargs=cfg.model_kwargs,
        num_classes=10,
        in_chans=3,
        img_size=32,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
    )
    loaded = catalog.build_model(spec)
    assert loaded.weights == "random" and loaded.data_config["input_size"] == (3, 32, 32)
    assert loaded.data_config["mean"] == (0.5, 0.5, 0.5) and loaded.data_config["crop_pct"] == 1.0
    x = loaded.preprocess([torch.randint(0, 255, (32, 32, 3), dtype=torch.uint8).numpy()])
    assert x.shape == (1, 3, 32, 32)
    y = loaded.model(x)
    assert y.shape == (1, 10) and torch.isfinite(y).all()
    if family == "vit":
        assert loaded.num_prefix_tokens == 1
        assert activation_layouts(loaded.model).tokens == (liecore.Layout.tokens((8, 8), 1),)
    with pytest.raises(catalog.CatalogError, match="no hub weights"):
        catalog.build_model(spec, weights="hub")


def test_e2cnn_is_c4_invariant_by_construction_even_untrained():
    torch.manual_seed(0)
    model = zoo.build_zoo_arch("zoo_e2cnn_c8", num_classes=10, model_kwargs={"width": 16}).eval().double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        for k in (1, 2, 3):
            assert torch.allclose(model(torch.rot90(x, k, (2, 3))), y, rtol=0, atol=1e-10 * y.abs().max())
    # e2cnn shares cached basis modules between the models it builds; ours own theirs, so the .double()
    # above leaves a new float32 model working
    fresh = zoo.build_zoo_arch("zoo_e2cnn_c8", num_classes=10, model_kwargs={"width": 16})
    assert fresh(torch.randn(2, 3, 32, 32)).dtype == torch.float32


def test_zoo_catalog_name_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LEE_CACHE_DIR", str(tmp_path))
    with pytest.raises(catalog.CatalogError, match="run `lee zoo train` first"):
        catalog.load_models("zoo")


def test_training_is_deterministic_given_the_seed(zoo_cache):
    tr = load_split("digits", "train")
    data = {"train": tr, "test": load_split("digits", "test", tr.classes)}
    data["ood"] = data["test"]
    cfg = ZooModelConfig("cnn", "s", recipe="strong", train_n=128, epochs=1)
    a, ma = train_model(cfg, data)
    b, mb = train_model(cfg, data)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ma["test_acc"] == mb["test_acc"] and ma["train_n"] == 128


def test_cli_dry_run_lists_the_grid(capsys, zoo_cache):
    assert main(["zoo", "train", "--preset", "full", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{len(PRESETS['full'])} models" in out and "zoo-e2cnn-s-none-nall-s0" in out


def test_more_seeds_add_models_and_leave_seed_0_as_it_was(capsys, zoo_cache):
    from pipelines.zoo.grid import with_seed
    from pipelines.zoo.train import _sha

    small = preset("small")
    three = preset("small", seeds=[0, 1, 2])
    assert three[: len(small)] == small  # seed 0: the same configs, so the same names and cache keys
    assert [c.name for c in three[len(small) : 2 * len(small)]] == [c.name.replace("-s0", "-s1") for c in small]
    assert {_sha(c.to_dict()) for c in small} == {_sha(c.to_dict()) for c in preset("small", seeds=[0])}
    # a fine-tuned model of seed 2 starts from the pretrained model of seed 2, which --only keeps, first
    only = preset("full", ["*-s2-ft"], seeds=[0, 2])
    assert [c.name for c in only] == ["zoo-vit-s-none-nall-s2-patches", "zoo-vit-s-rotate-nall-s2-ft"]
    assert only[1].pretrain == only[0].name == with_seed(PRESETS["full"][-3], 2).name
    with pytest.raises(ValueError, match="non-negative"):
        preset("small", seeds=[-1])
    assert main(["zoo", "train", "--seeds", "0,1,2", "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "12 models (preset small, seeds 0,1,2" in out and "zoo-mixer-s-none-nall-s2" in out
    with pytest.raises(SystemExit):
        main(["zoo", "train", "--seeds", "0,x", "--dry-run"])
    assert "seeds must be comma-separated integers" in capsys.readouterr().err


def test_summary_gives_the_spread_over_seeds_and_augmentation_within_a_seed():
    from pipelines.zoo.summary import render_markdown

    def rec(family, recipe, seed, err, lee):
        return {
            "name": f"zoo-{family}-s-{recipe}-nall-s{seed}",
            "family": family,
            "size": "s",
            "task": "digits",
            "recipe": recipe,
            "train_n": 1200,
            "params": 25_000,
            "pretrain": None,
            "train_acc": 0.99,
            "test_acc": 1 - err / 100,
            "ood_acc": 0.3,
            "lee": {"digits-test": (lee, 0.01, 200)},
            "seed": seed,
        }

    recs = [rec("cnn", "none", s, e, v) for s, e, v in ((0, 20.0, 0.5), (1, 22.0, 0.6), (2, 18.0, 0.4))]
    recs += [rec("cnn", "rotate", s, 15.0, v) for s, v in ((0, 0.25), (1, 0.2), (2, 0.2))]
    recs.append(rec("e2cnn", "none", 0, 10.0, 0.026))  # one seed: no spread row
    text = render_markdown(recs)
    assert "| cnn | s | none | 1200 | 0,1,2 | 20.0 ± 2.0 (18.0-22.0) | 0.5 ± 0.1 (0.4-0.6) |" in text
    assert "| cnn | s | rotate | 1200 | 0,1,2 | 15.0 ± 0.0 (15.0-15.0) |" in text
    assert "| e2cnn | s | none | 1200 |" not in text.split("Spread over seeds")[1]
    # augmentation: each seed against its own unaugmented model (0.5/0.25, 0.6/0.2, 0.4/0.2)
    assert "cnn s0 2x" in text and "cnn s1 3x" in text and "cnn s2 2x" in text
    single = render_markdown([r for r in recs if r["seed"] == 0])
    assert "Spread over seeds" not in single and "n = 1 families" in single and "cnn 2x" in single


# ----------------------------------------------------------------------------------- the trained zoo
C8, CNN, CNN_ROT = "zoo-e2cnn-s-none-nall-s0", "zoo-cnn-s-none-nall-s0", "zoo-cnn-s-rotate-nall-s0"
MIXER = "zoo-mixer-s-none-nall-s0"


def _loaded(name: str) -> catalog.LoadedModel:
    specs = {s.name: s for s in catalog.load_models("zoo")}
    return catalog.build_model(specs[name])


@pytest.fixture(scope="module")
def test_images(zoo_cache: str) -> list[np.ndarray]:
    """The first test digits, through the catalog's own decoding (what ``lee eval`` feeds the models)."""
    imset = catalog.load_dataset("digits-test")
    return [im.array for im in imset.images[:N_LEE]]


@pytest.fixture(scope="module")
def rotation_lee(small_zoo: ZooResult, test_images: list[np.ndarray]) -> dict[str, tuple[float, float]]:
    """Rotation LEE (mean, stderr over ``N_LEE`` test digits) of the models the comparisons need, once."""
    out = {}
    for name in (C8, CNN, CNN_ROT, MIXER):
        lm = _loaded(name)
        res = liecore.lee(
            lm.model, lm.preprocess(test_images), ["rotate"], mean=lm.data_config["mean"], std=lm.data_config["std"]
        )
        out[name] = (float(res.mean[0]), float(res.stderr[0]))
    print(
        "\nrotation LEE over",
        len(test_images),
        "test digits:",
        ", ".join(f"{k} {m:.4g} ± {se:.2g}" for k, (m, se) in out.items()),
    )
    return out


@pytest.mark.slow
def test_small_preset_beats_chance_and_training_reproduces_its_checkpoints(small_zoo, tmp_path):
    stale = [m.config.name for m in small_zoo.models if not m.cached]
    assert not stale, (
        f"tests/data/zoo-small has no checkpoint under the current cache key for {stale} (the zoo's code or data "
        "changed): regenerate it as its README says"
    )
    for m in small_zoo.models:
        meta = m.meta
        print(
            f"{m.config.name:<30} train {meta['train_acc']:.3f} test {meta['test_acc']:.3f} "
            f"ood {meta['ood_acc']:.3f} chance {meta['chance_acc']:.2f}"
        )
        # observed (seed 0) 0.765-0.898 on the 597 test digits; chance is 0.10
        assert meta["test_acc"] > 5 * meta["chance_acc"], m.config.name
    # The committed checkpoints are what training gives: the plain CNN (the cheapest, ~15 s) trained again from
    # scratch with the same config, data and threads lands on the same weights and accuracies.
    committed = next(m for m in small_zoo.models if m.config.name == CNN)
    again = train_zoo([committed.config], tmp_path, threads=2).models[0]
    print(f"\n{CNN} trained again in {again.meta['train_wall_s']:.1f} s: test {again.meta['test_acc']:.3f}")
    assert not again.cached and again.meta["key"] == committed.meta["key"]
    for split in ("train_acc", "test_acc", "ood_acc"):
        # the same CPU kernels give the same weights; others may round differently over the 570 steps
        assert abs(again.meta[split] - committed.meta[split]) <= 0.02, (split, again.meta, committed.meta)
    new, old = catalog.read_checkpoint(str(again.checkpoint))[0], catalog.read_checkpoint(str(committed.checkpoint))[0]
    assert new.keys() == old.keys()
    drift = max(float((new[k].double() - old[k].double()).abs().max()) for k in new)
    print(f"largest weight difference from the committed checkpoint: {drift:.3g}")


@pytest.mark.slow
def test_catalog_entries_carry_full_metadata_and_reload_exactly(small_zoo, zoo_cache):
    specs = {s.name: s for s in catalog.load_models("zoo")}
    assert set(specs) == {m.config.name for m in small_zoo.models}
    for m in small_zoo.models:
        spec = specs[m.config.name]
        assert spec.source == "file" and Path(spec.checkpoint).exists()
        assert spec.checkpoint.endswith(".safetensors") and spec.family == m.config.family
        t = spec.training
        for key in (
            "task",
            "train_n",
            "recipe",
            "seed",
            "epochs",
            "train_acc",
            "test_acc",
            "params",
            "data_fingerprint",
            "key",
            "versions",
        ):
            assert t.get(key) is not None, (spec.name, key)
        assert t["data_fingerprint"]["test"] == catalog.load_dataset("digits-test").fingerprint
        assert math.isclose(spec.params_m * 1e6, t["params"], abs_tol=1)
    # the catalog's build + preprocessing reproduce the accuracy measured at training time
    lm = catalog.build_model(specs[C8])
    imset = catalog.load_dataset("digits-test")
    classes = specs[C8].training["classes"]
    with torch.no_grad():
        pred = lm.model(lm.preprocess([im.array for im in imset.images])).argmax(1)
    acc = float((pred == torch.tensor([classes.index(im.label) for im in imset.images])).float().mean())
    assert abs(acc - specs[C8].training["test_acc"]) <= 1.5 / len(imset), (acc, specs[C8].training["test_acc"])


@pytest.mark.slow
def test_trained_models_are_cached(small_zoo, capsys):
    t0 = time.perf_counter()
    assert main(["zoo", "train", "--preset", "small"]) == 0
    wall = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert f"{len(small_zoo.models)} models (0 trained, {len(small_zoo.models)} cached)" in out, out
    assert all(f"cached   {m.config.name}" in out for m in small_zoo.models)
    assert yaml.safe_load(catalog.zoo_catalog_path().read_text())["trained"]["last_preset"] == "small"
    print(f"\ncached small preset: {wall:.1f} s")
    assert wall < 60


def _quarter_turn_error(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    r"""Per image, the largest sampled equivariance error over the exact quarter turns :math:`t = k\pi/2`.

    ``max_k ||softmax f(rho(t_k) x) - softmax f(x)||^2 / classes`` with liecore's group action (the one
    ``liecore.metrics.sampled_equivariance_error`` draws from; its draws are uniform, never exactly k pi/2).
    """
    with torch.no_grad():
        p = model(x).softmax(-1)
        errs = [
            (model(liecore.transform(x, "rotate", k * math.pi / 2)).softmax(-1) - p).square().mean(-1)
            for k in (1, 2, 3)
        ]
    return torch.stack(errs).amax(0)


@pytest.mark.slow
def test_c8_model_is_invariant_to_exact_quarter_turns_where_a_cnn_is_not(small_zoo, test_images):
    quarter, uniform = {}, {}
    for name in (C8, CNN):
        lm = _loaded(name)
        model = lm.model.double()
        x = lm.preprocess(test_images).double()
        assert torch.allclose(
            liecore.transform(x[:2], "rotate", math.pi / 2), torch.rot90(x[:2], -1, (2, 3)), rtol=0, atol=1e-12
        )
        quarter[name] = _quarter_turn_error(model, x)
        uniform[name] = liecore.metrics.sampled_equivariance_error(
            model, x[:50], "rotate", t_max=math.pi, num_samples=2, seed=0
        )
    print(
        f"\nsampled equivariance error over {len(test_images)} test digits (float64), quarter turns: "
        + ", ".join(f"{k} max {float(v.max()):.3g} mean {float(v.mean()):.3g}" for k, v in quarter.items())
        + "; t ~ U[-pi, pi] over 50 digits: "
        + ", ".join(f"{k} {r.mean:.3g} ± {r.stderr:.2g}" for k, r in uniform.items())
    )
    # observed (seed 0, two threads): C8 max 4.5e-30 (float64 rounding: a quarter turn permutes the pixel
    # grid exactly), plain CNN mean 0.023, max 0.13 (its predictions change); for angles t ~ U[-pi, pi]
    # neither is invariant: C8 5.8e-4 ± 0.8e-4, CNN 1.4e-2 ± 0.2e-2 (50 digits, two draws each)
    assert float(quarter[C8].max()) < 1e-24
    assert float(quarter[CNN].mean()) > 1e-3
    assert 1e-6 < uniform[C8].mean < uniform[CNN].mean / 3


@pytest.mark.slow
def test_c8_rotation_lee_is_lower_than_a_cnn_but_not_zero(rotation_lee):
    (c8, c8_se), (cnn, cnn_se) = rotation_lee[C8], rotation_lee[CNN]
    print(f"\nrotation LEE: C8 {c8:.4g} ± {c8_se:.2g}, CNN {cnn:.4g} ± {cnn_se:.2g}, ratio {cnn / c8:.1f}")
    # observed (seed 0, 200 digits): C8 0.026 ± 0.002, CNN 0.57 ± 0.07: ratio ~22
    assert c8 < cnn / 4
    # a C8 model on a pixel grid is not infinitesimally rotation-equivariant: far above the float floor
    assert c8 > 1e-4 and c8 > cnn / 1000


@pytest.mark.slow
def test_rotation_augmentation_lowers_rotation_lee(rotation_lee):
    (plain, plain_se), (rot, rot_se) = rotation_lee[CNN], rotation_lee[CNN_ROT]
    print(
        f"\nrotation LEE: CNN {plain:.4g} ± {plain_se:.2g}, CNN + rotation aug {rot:.4g} ± {rot_se:.2g}, "
        f"ratio {plain / rot:.2f}"
    )
    # observed (seed 0, 200 digits): 0.57 ± 0.07 without, 0.20 ± 0.03 with rotation augmentation: ratio ~2.8
    # (smaller than on upright data: the training digits are already uniformly rotated, so the plain CNN
    # sees every orientation too)
    assert rot < plain / 1.5


@pytest.mark.slow
def test_documented_conclusions_hold_not_the_digits(small_zoo, rotation_lee):
    """docs/zoo.md states what held across CPUs, not the digits: this checks those statements.

    The E(2)-CNN is the most accurate and the most rotation-equivariant of the small preset, and rotation
    augmentation lowers the CNN's rotation LEE by a factor within 1.5x-6x (2.8x and 3.0x measured on two CPUs).
    """
    acc = {m.config.name: m.meta["test_acc"] for m in small_zoo.models}
    assert max(acc, key=acc.get) == C8, acc
    lee = {name: mean for name, (mean, _) in rotation_lee.items()}
    assert min(lee, key=lee.get) == C8, lee
    assert 1.5 <= lee[CNN] / lee[CNN_ROT] <= 6.0, lee
