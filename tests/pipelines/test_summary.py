"""The sweep's final table: one row per model, weights and dataset, generators as columns."""

import math

from pipelines.running.progress import format_table
from pipelines.running.summary import pivot_summary


def _row(model, dataset, generator, lee, se, n=4, weights="random"):
    return {
        "model": model,
        "weights": weights,
        "dataset": dataset,
        "generator": generator,
        "lee": lee,
        "stderr": se,
        "n": n,
    }


def test_pivot_summary_rows_columns_and_cells():
    rows = [
        _row("m1", "test", "rotate", 2.5e-3, 1e-4),
        _row("m1", "test", "translate_x", 1.0e-3, 2e-4),
        _row("m1", "ood", "rotate", 4.0, math.nan, n=1),
        _row("m2", "test", "contrast", 0.0, 0.0, weights="hub"),
    ]
    table, columns = pivot_summary(rows)
    # Generators in liecore's order (translate_x before rotate before the colour generators), then n.
    assert [k for k, _ in columns] == ["model", "weights", "dataset", "translate_x", "rotate", "contrast", "n"]
    by_key = {(r["model"], r["dataset"]): r for r in table}
    assert len(table) == 3
    assert by_key["m1", "test"]["rotate"] == "0.0025±0.0001"
    assert by_key["m1", "test"]["translate_x"] == "0.001±0.0002"
    assert by_key["m1", "ood"]["rotate"] == "4"  # a single image has no standard error
    assert "translate_x" not in by_key["m1", "ood"]
    assert by_key["m2", "test"]["weights"] == "hub"
    text = format_table(table, columns)
    assert text.splitlines()[0].split() == ["model", "weights", "dataset", "translate_x", "rotate", "contrast", "n"]
    assert "-" in text.splitlines()[3]  # missing cells print as '-'
