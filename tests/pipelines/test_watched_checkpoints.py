"""A watched folder of checkpoints: ``lee reevaluate`` finds new, changed and gone files, and keeps the
results of earlier weights (``runs_history`` / ``lee_history``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import catalog
from pipelines.cli import main
from pipelines.commands import reevaluate_cmd


def _save(path: Path, seed: int) -> str:
    """Weights of a randomly initialised timm ``test_resnet`` (seeded), saved with safetensors; their sha256."""
    import timm
    import torch
    from safetensors.torch import save_file

    from catalog._checkpoint import sha256_file

    torch.manual_seed(seed)
    save_file(timm.create_model("test_resnet", pretrained=False).state_dict(), str(path))
    return sha256_file(str(path))


def _packaged_fresh(tmp_path: Path) -> reevaluate_cmd.FreshCatalog:
    """The regenerated ``all`` catalog without regenerating it: for the installed timm it equals the
    packaged one (tests/pipelines/test_reevaluate.py checks that); regenerating takes ~10-30 s a call."""
    import timm

    specs = {s.name: s for s in catalog.load_models("all")}
    return reevaluate_cmd.FreshCatalog(
        path=tmp_path / "all.json",
        timm_version=timm.__version__,
        specs=specs,
        arch_defaults={s.arch: s.name for s in reversed(list(specs.values()))},
        aliases={},
        new=[],
    )


def _listed(out: str) -> dict[str, str]:
    """unit -> reason of the plan table ``lee reevaluate`` prints (up to the gone table)."""
    rows = {}
    for line in out.split("\n\n")[0].splitlines()[2:]:
        if line.strip() and line.split()[0] != "nothing":
            parts = line.split(None, 4)
            rows[parts[0]] = parts[4].strip()
    return rows


@pytest.mark.ray
@pytest.mark.slow
def test_new_changed_and_gone_checkpoints_and_the_history_of_weights(
    ray_session, tmp_path, capsys, monkeypatch
) -> None:
    from pipelines.analysis.views import connect
    from pipelines.running.execute import execute
    from pipelines.running.plan import plan
    from pipelines.spec.config import SweepConfig
    from pipelines.store.results import Store

    monkeypatch.setenv("LEE_CACHE_DIR", str(tmp_path / "cache"))  # the digest cache
    monkeypatch.setattr(reevaluate_cmd, "regenerate_catalog", lambda cache=None: _packaged_fresh(tmp_path))
    watched = tmp_path / "ckpts"
    watched.mkdir()
    _save(watched / "base.safetensors", 1)
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - {{checkpoints: '{watched}', arch: test_resnet}}\n")
    out = tmp_path / "res"
    cfg = SweepConfig(
        models=[str(models)],
        datasets=["sample-test"],
        generators=["translate_x"],
        images=2,
        img_size=32,
        output=str(out),
        batch_size=2,
    )
    execute(plan(cfg))
    # The next plans read no checkpoint that a done unit loaded as it is now (digests cached by listing).
    from pipelines.store import history

    specs = [u.model for u in plan(cfg, dry_run=True).units]
    done = Store(str(out)).runs().to_pylist()
    cache = history.DigestCache(tmp_path / "digests.json")
    assert history.loaded_before(specs, done, cache) == {"test_resnet@base"} and cache.hashed == 1
    cache.save()
    again = history.DigestCache(tmp_path / "digests.json")
    assert history.loaded_before(specs, done, again) == {"test_resnet@base"} and again.hashed == 0
    assert history.loaded_before([specs[0].replace(key_map={"by_order": True})], done, again) == set()
    argv = [
        "reevaluate",
        "--dry-run",
        "-r",
        str(out),
        "-m",
        str(models),
        "-d",
        "sample-test",
        "-g",
        "translate_x",
        "-n",
        "2",
        "--img-size",
        "32",
        "--batch-size",
        "2",
    ]
    assert main(argv) == 0
    assert "nothing new or changed" in capsys.readouterr().out

    # A file added to the folder: exactly its units are new.
    sha1 = _save(watched / "ep1.safetensors", 2)
    new_units = {u.key for u in plan(cfg, dry_run=True).units if u.model.name == "test_resnet@ep1"}
    assert len(new_units) == 1
    assert main(argv) == 0
    assert _listed(capsys.readouterr().out) == {k: "new checkpoint" for k in new_units}

    run_argv = [a for a in argv if a != "--dry-run"] + ["--no-progress"]
    assert main(run_argv) == 0
    capsys.readouterr()
    con = connect(str(out))
    first = con.execute("SELECT mean_lee, n FROM lee_summary WHERE model = 'test_resnet@ep1'").fetchall()
    con.close()
    assert len(first) == 1 and first[0][1] == 2

    # The same file overwritten with other weights: its units again, as "weights changed".
    sha2 = _save(watched / "ep1.safetensors", 3)
    assert sha2 != sha1
    assert main(argv) == 0
    assert _listed(capsys.readouterr().out) == {k: "weights changed" for k in new_units}
    assert main(run_argv) == 0
    capsys.readouterr()
    (unit,) = new_units
    kept = Store(str(out)).history_runs().to_pylist()
    assert [(r["unit"], r["weights_sha256"], r["status"]) for r in kept] == [(unit, sha1, "done")]

    con = connect(str(out))
    hist = con.execute(
        "SELECT weights_sha256, latest, n, mean_lee, finished_at FROM lee_history "
        "WHERE model = 'test_resnet@ep1' ORDER BY finished_at"
    ).fetchall()
    latest = con.execute("SELECT mean_lee, n FROM lee_summary WHERE model = 'test_resnet@ep1'").fetchall()
    runs = con.execute("SELECT weights_sha256 FROM runs WHERE model = 'test_resnet@ep1'").fetchall()
    n_rows = con.execute("SELECT count(*) FROM lee WHERE model = 'test_resnet@ep1'").fetchone()[0]
    n_hist = con.execute("SELECT count(*) FROM runs_history WHERE unit = ?", [unit]).fetchone()[0]
    con.close()
    assert [(h[0], h[1], h[2]) for h in hist] == [(sha1, False, 2), (sha2, True, 2)]
    assert hist[0][3] == first[0][0]  # the earlier weights' LEE, as it was measured
    assert latest == [(hist[1][3], 2)] and hist[1][3] != hist[0][3]  # the views show the latest only
    assert runs == [(sha2,)] and n_rows == 2 and n_hist == 2

    # The file deleted: listed as gone, not an error, and its results stay.
    (watched / "ep1.safetensors").unlink()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "nothing new or changed" in printed
    gone = printed.split("their results are kept):\n", 1)[1].splitlines()
    assert gone[2].split()[:4] == ["test_resnet@ep1", f"{watched}/ep1.safetensors", "1", gone[2].split()[3]]
    assert gone[2].split()[-1] == "gone" and len([g for g in gone if g.strip()]) == 3
    con = connect(str(out))
    assert con.execute("SELECT count(*) FROM lee WHERE model = 'test_resnet@ep1'").fetchone()[0] == 2
    con.close()


def test_gone_checkpoints_are_the_watched_files_no_longer_listed() -> None:
    import datetime as dt
    import json

    spec = catalog.get_model("test_resnet").replace(
        name="r@a", source="file", checkpoint="s3://b/ck/a.pt", checkpoints="s3://b/ck/*.pt"
    )
    t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def row(model: str, ckpt: str, status: str = "done", weights: str = "file") -> dict:
        return {
            "model": model,
            "status": status,
            "weights": weights,
            "finished_at": t,
            "key_json": json.dumps({"model": {"checkpoint": ckpt}}),
        }

    runs = [
        row("r@a", "s3://b/ck/a.pt"),
        row("r@b", "s3://b/ck/b.pt"),
        row("r@b", "s3://b/ck/b.pt"),
        row("r@c", "s3://b/ck/c.pt", status="failed"),
        row("r@d", "s3://b/other/d.pt"),
        row("r@e", "s3://b/ck/sub/e.pt"),
    ]
    gone = reevaluate_cmd.gone_checkpoints([spec], runs)
    assert [(g.model, g.checkpoint, g.units) for g in gone] == [("r@b", "s3://b/ck/b.pt", 2)]
    assert reevaluate_cmd.gone_checkpoints([spec.replace(checkpoints=None)], runs) == []
