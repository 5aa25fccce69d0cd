"""``lee eval`` and ``lee zoo summary`` on the trained ``small`` zoo, on the session's local Ray (a module of its own:
the other zoo tests need no Ray, so they run in either pytest-xdist worker)."""

from __future__ import annotations

import pytest
import torch

import catalog
import liecore
from pipelines.cli import main
from tests.zoo.test_zoo import CNN, _loaded


@pytest.mark.slow
@pytest.mark.ray
def test_lee_eval_runs_on_the_zoo_unchanged(small_zoo, ray_session, tmp_path, capsys):
    out = tmp_path / "results"
    n = 8
    rc = main(
        [
            "eval",
            "-m",
            "zoo",
            "-d",
            "digits-test",
            "-g",
            "rotate",
            "--images",
            str(n),
            "-r",
            str(out),
            "--batch-size",
            str(n),
            "--no-progress",
        ]
    )
    assert rc == 0
    from pipelines.store.results import Store

    table = Store(str(out)).read_table("lee").to_pylist()
    assert {r["model"] for r in table} == {m.config.name for m in small_zoo.models}
    assert all(r["weights"] == "file" and r["generator"] == "rotate" for r in table)
    assert len(table) == n * len(small_zoo.models)
    # the sweep's numbers are liecore's on the catalog's preprocessing
    rows = sorted((r["sample_index"], r["value"]) for r in table if r["model"] == CNN)
    lm = _loaded(CNN)
    imset = catalog.load_dataset("digits-test")
    x = lm.preprocess([im.array for im in imset.images[:n]])
    direct = liecore.lee(lm.model, x, ["rotate"], mean=lm.data_config["mean"], std=lm.data_config["std"])
    assert torch.allclose(torch.tensor([v for _, v in rows], dtype=torch.float64), direct["rotate"], rtol=1e-3)
    capsys.readouterr()
    assert main(["zoo", "summary", "-r", str(out)]) == 0
    text = capsys.readouterr().out
    print(text)
    assert f"over {n} `digits-test` images" in text
    for m in small_zoo.models:
        assert f"| {m.config.name} | {m.config.family} |" in text
    assert "Spearman rank correlation" in text and "n = 4 digits models" in text
    assert "Augmentation `rotate` vs none" in text
