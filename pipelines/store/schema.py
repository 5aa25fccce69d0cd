r"""The results store: one pyarrow schema per table, defined here and nowhere else.

Layout under the output root (any fsspec URI), hive-partitioned Parquet::

    <root>/lee/model=<model>/dataset=<dataset>/unit=<key>/part-0.parquet
    <root>/layerwise/model=<model>/dataset=<dataset>/unit=<key>/part-0.parquet
    <root>/alt/model=<model>/dataset=<dataset>/unit=<key>/part-0.parquet
    <root>/explain/model=<model>/dataset=<dataset>/unit=<key>/part-0.parquet
    <root>/runs/unit=<key>/part-0.parquet

and, for units whose weights changed (a ``file`` checkpoint overwritten under the same path, a hub cache
with another revision), the previous done attempt of each weights sha256 (:mod:`pipelines.store.history`)::

    <root>/history/<table>/model=<model>/dataset=<dataset>/unit=<key>/weights_sha256=<sha256>/part-0.parquet
    <root>/history/runs/unit=<key>/weights_sha256=<sha256>/part-0.parquet

Partition values are percent-encoded (:func:`partition_value`); the partition columns are
also stored inside the files (same values), so a file read on its own is self-describing and
``read_parquet(..., hive_partitioning = true)`` gives the same columns.

Visibility rule (what makes reruns exactly-once): **a unit's data rows count only when its
``runs`` row has ``status = 'done'``**; readers join on ``unit``. A unit being computed first
replaces its ``runs`` row by an ``Interrupted`` placeholder (``status = 'failed'``), then writes
its data file under a temporary name and renames it over the old one (old data is never deleted
first), and writes its final ``runs`` row last (also temp + rename). A kill at any moment
therefore leaves either the old complete state or a unit that is not done and is redone by the
next run; never a done row without its data. Each unit has at most one ``runs`` row (the latest
attempt) and one data file, plus, under ``history/``, one of each per earlier weights sha256.

Long format: one value per row. Units of ``value``: the LEE is
:math:`\|L_X f(x)\|^2/\dim(\mathrm{out})` in (output units)\ :sup:`2` per (generator
parameter)\ :sup:`2`; spatial generators are parameterised in liecore's normalized
coordinates (the image spans ``[-1, 1]``; one pixel is ``2/(W-1)``), ``contrast`` in
log-contrast; the output is class probabilities (``output = 'probs'``, unitless) unless
stated otherwise.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import pyarrow as pa

__all__ = [
    "ALT",
    "EXPLAIN",
    "LAYERWISE",
    "LEE",
    "RUNS",
    "SCHEMA_VERSION",
    "TABLES",
    "Column",
    "Table",
    "data_path",
    "history_data_path",
    "history_runs_path",
    "partition_value",
    "runs_path",
]

HISTORY_DIR = "history"
"""Folder under the root that keeps the done attempts of earlier weights (same tables, one more partition)."""

SCHEMA_VERSION = "7"
"""Bumped whenever a column is added, removed or changes meaning (stored in ``runs``)."""


@dataclass(frozen=True)
class Column:
    """One column: name, arrow type, unit (``-`` if none) and meaning."""

    name: str
    type: pa.DataType
    unit: str
    doc: str
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    """A results table: its columns and hive partition columns."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    partition_by: tuple[str, ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(
            [
                pa.field(c.name, c.type, nullable=c.nullable, metadata={"unit": c.unit, "doc": c.doc})
                for c in self.columns
            ],
            metadata={"table": self.name, "schema_version": SCHEMA_VERSION},
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def markdown(self) -> str:
        """The README table: column, type, unit, meaning."""
        rows = ["| column | type | unit | meaning |", "|---|---|---|---|"]
        for c in self.columns:
            null = " (nullable)" if c.nullable else ""
            rows.append(f"| `{c.name}` | {c.type}{null} | {c.unit} | {c.doc} |")
        return "\n".join(rows)


def _key_columns() -> tuple[Column, ...]:
    """Columns shared by every per-image table (identify the unit, the model and the image)."""
    return (
        Column(
            "unit",
            pa.string(),
            "-",
            "content key of the work unit (hex); join to `runs.unit`, count only `runs.status = 'done'`",
        ),
        Column("model", pa.string(), "-", "catalog model name, timm `arch.tag`"),
        Column("weights", pa.string(), "-", "weights actually used: `hub`, `file` or `random` (random init)"),
        Column("dataset", pa.string(), "-", "catalog dataset name"),
        Column("role", pa.string(), "-", "dataset role: `train`, `test` or `ood`"),
        Column("sample_id", pa.string(), "-", "image id within the dataset (`image_id` of the catalog record)"),
        Column(
            "sample_index", pa.int32(), "-", "0-based position of the image in the evaluated (ordered, limited) dataset"
        ),
        Column(
            "label",
            pa.string(),
            "-",
            "ground-truth label as the dataset records it (class name, or class index as text); null if unknown",
            nullable=True,
        ),
    )


LEE = Table(
    "lee",
    "One row per image and generator: the Local Equivariance Error of the model's output.",
    _key_columns()
    + (
        Column("generator", pa.string(), "-", "liecore generator name (`translate_x`, `rotate`, `contrast`, ...)"),
        Column("metric", pa.string(), "-", "always `lee`"),
        Column(
            "value",
            pa.float64(),
            "(output unit)^2 / (generator parameter)^2",
            "LEE of this image: `||L_X f(x)||^2 / dim(out)` (liecore `LEEResult.values`)",
        ),
        Column(
            "mean_abs",
            pa.float64(),
            "output unit / generator parameter",
            "`mean_c |L_X f(x)_c|` for this image (liecore `LEEResult.mean_abs`); not the LEE",
        ),
        Column(
            "output", pa.string(), "-", "what was differentiated: `probs` (softmax, the paper's choice) or `logits`"
        ),
        Column("interpolation", pa.string(), "-", "image interpolant of the derivative: `cubic` or `spectral`"),
    ),
    ("model", "dataset", "unit"),
)

LAYERWISE = Table(
    "layerwise",
    "One row per image, generator and layer call: the layer's contribution to the end-to-end LEE, "
    "plus one `end_to_end` and one `unattributed` row per image and generator.",
    _key_columns()
    + (
        Column("generator", pa.string(), "-", "liecore generator name"),
        Column("method", pa.string(), "-", "decomposition method: `exact` or `stochastic`"),
        Column(
            "num_probes",
            pa.int32(),
            "-",
            "random probes per image of the stochastic method, seeded with (`runs.seed`, `sample_index`) (null for "
            "`exact`)",
            nullable=True,
        ),
        Column(
            "kind",
            pa.string(),
            "-",
            "`layer` (one layer call), `end_to_end` (the whole model's LEE) or `unattributed` (end-to-end minus the "
            "sum of layer rows)",
        ),
        Column(
            "layer",
            pa.string(),
            "-",
            "qualified module name (`stages.1.blocks.0.conv`); `<end_to_end>` / `<unattributed>` for those rows",
        ),
        Column(
            "layer_class", pa.string(), "-", "module class name (`Conv2d`, `LayerNorm`, ...); empty for non-layer rows"
        ),
        Column("call_index", pa.int32(), "-", "order of the call in the forward pass (0-based; -1 for non-layer rows)"),
        Column(
            "layer_kind",
            pa.string(),
            "-",
            "coarse layer type (`liecore.layer_kind`: convolution, normalization, normalization_activation (timm's "
            "fused `BatchNormAct2d` ...), activation, attention, patch_embedding, downsampling, linear, mixer_block, "
            "...); `end_to_end` / `unattributed` for those rows",
        ),
        Column(
            "value",
            pa.float64(),
            "(output unit)^2 / (generator parameter)^2",
            "`||c_i||^2 / dim(out)`: the layer's contribution c_i = dF_{N:i+1} L_X f_i on the LEE scale; the "
            "end-to-end LEE; or `||L F - sum_i c_i||^2 / dim(out)` for the unattributed row",
        ),
        Column(
            "share",
            pa.float64(),
            "(output unit)^2 / (generator parameter)^2",
            "signed additive share `<c_i, L_X F> / dim(out)` (liecore `LayerRecord.share`, `unattributed_share`): per "
            "image and generator the layer shares plus the unattributed share sum to the end-to-end value",
        ),
        Column(
            "stderr",
            pa.float64(),
            "(output unit)^2 / (generator parameter)^2",
            "standard error of `value` over probes (stochastic method); null for `exact`",
            nullable=True,
        ),
    ),
    ("model", "dataset", "unit"),
)

ALT = Table(
    "alt",
    "One row per image and alternative metric (liecore.metrics).",
    _key_columns()
    + (
        Column("metric", pa.string(), "-", "metric name (key of `liecore.metrics.METRICS`)"),
        Column("value", pa.float64(), "see `value_unit`", "the metric's value for this image"),
        Column("value_unit", pa.string(), "-", "unit of `value`, as declared by the metric"),
        Column("higher_is_better", pa.bool_(), "-", "the metric's declared direction"),
        Column(
            "sse",
            pa.float64(),
            "(output unit)^2",
            "EQ metrics (`eq_t`, `eq_t_frac`, `eq_r`): this image's squared error summed over the valid elements and "
            "the draws; null for the other metrics (and in units written before schema 5)",
            nullable=True,
        ),
        Column(
            "mask_count",
            pa.float64(),
            "-",
            "EQ metrics: this image's valid elements (StyleGAN3's mask) summed over the draws; "
            "`alt_summary.pooled_value` is StyleGAN3's PSNR of `sum(sse) / sum(mask_count)`; "
            "null for the other metrics",
            nullable=True,
        ),
        Column(
            "peak_to_peak",
            pa.float64(),
            "output unit",
            "EQ metrics: the value range their PSNR assumes (liecore's default 2); null for the other metrics",
            nullable=True,
        ),
        Column(
            "seed",
            pa.int64(),
            "-",
            "seed of the unit; the image's random draws (group elements, shifts) come from a generator seeded with "
            "(seed, `sample_index`), so values do not depend on the batch",
        ),
    ),
    ("model", "dataset", "unit"),
)

EXPLAIN = Table(
    "explain",
    "Where the LEE arises (liecore.explain): per image and generator one row per layer call with a located error "
    "(its signed share map pooled on a grid), per layer with unlocated shares, one row for the image map and one "
    "for the remainder. Shares are fractions of the image's LEE.",
    _key_columns()
    + (
        Column("generator", pa.string(), "-", "liecore generator name"),
        Column(
            "kind",
            pa.string(),
            "-",
            "`layer` (a layer's map on its own grid, pooled), `special` (a layer's shares without a location: prefix "
            "tokens, outputs that do not move), `image` (the layer maps resampled to the input grid and added, pooled "
            "on its cells) or `remainder` (what happens between recorded layers)",
        ),
        Column(
            "layer",
            pa.string(),
            "-",
            "qualified module name (`#k` for the k-th repeated call of a module); `<image>` / `<remainder>` for those "
            "rows",
        ),
        Column("layer_class", pa.string(), "-", "module class name; empty for image and remainder rows"),
        Column(
            "call_index",
            pa.int32(),
            "-",
            "order of the call in the forward pass (the `layerwise` table's `call_index`); -1 for image and remainder "
            "rows",
        ),
        Column(
            "layer_kind",
            pa.string(),
            "-",
            "coarse layer type (`liecore.layer_kind`); `image` / `remainder` for those rows",
        ),
        Column(
            "grid_h",
            pa.int32(),
            "cells",
            "rows of `cells`: min(16, the layer's grid rows) (the input's for `image` rows); null for special and "
            "remainder rows",
            nullable=True,
        ),
        Column("grid_w", pa.int32(), "cells", "columns of `cells`, as `grid_h`", nullable=True),
        Column(
            "total",
            pa.float64(),
            "fraction of the image's LEE",
            "the row's share: sum of its map (the layer's `layerwise.share / end_to_end` for a layer with no special "
            "row); per image and generator the layer, special and remainder rows add up to 1",
        ),
        Column(
            "abs_total",
            pa.float64(),
            "fraction of the image's LEE",
            "sum of the absolute values of the unpooled map (layer and image rows), or of the shares (special rows), "
            "|remainder| for remainder rows",
        ),
        Column(
            "cells",
            pa.list_(pa.float64()),
            "fraction of the image's LEE",
            "the map summed onto grid_h x grid_w cells by area overlap, row-major (cell (r, c) covers rows [r "
            "H/grid_h, (r+1) H/grid_h) of the map's own grid); the prefix-token shares for special rows; null for "
            "remainder rows",
            nullable=True,
        ),
        Column(
            "border_profile",
            pa.list_(pa.float64()),
            "fraction of the image's LEE",
            "image rows: the full-resolution image map summed over 1-px rings at distance 0, 1, ... px from the "
            "input's border; null for other rows",
            nullable=True,
        ),
        Column(
            "texture",
            pa.list_(pa.float64()),
            "fraction of the image's gradient energy",
            "image rows: the model input's local gradient energy (`sum_c (d_row x_c)^2 + (d_col x_c)^2`, central "
            "differences) summed on the same grid_h x grid_w cells as `cells`, divided by the image's total (adds up "
            "to 1); null for other rows and in stores of schema version < 7",
            nullable=True,
        ),
        Column("input_h", pa.int32(), "px", "height of the model's input (the image map's grid)"),
        Column("input_w", pa.int32(), "px", "width of the model's input"),
        Column(
            "lee",
            pa.float64(),
            "(output unit)^2 / (generator parameter)^2",
            "the image's end-to-end LEE (multiply the shares by it for LEE units)",
        ),
        Column("output", pa.string(), "-", "what was differentiated: `probs` or `logits`"),
        Column("interpolation", pa.string(), "-", "image interpolant of the derivative: `cubic` or `spectral`"),
    ),
    ("model", "dataset", "unit"),
)

RUNS = Table(
    "runs",
    "One row per work unit (model x dataset x metric family x config): the latest attempt.",
    (
        Column("unit", pa.string(), "-", "content key of the work unit: sha256 (hex, 20 chars) of `key_json`"),
        Column(
            "status",
            pa.string(),
            "-",
            "`done` (data rows complete and visible) or `failed` (`error_type = 'Interrupted'`: started and never "
            "finished, or still running)",
        ),
        Column("family", pa.string(), "-", "metric family: `lee`, `layerwise`, `alt` or `explain` (= the data table)"),
        Column("model", pa.string(), "-", "catalog model name"),
        Column("arch", pa.string(), "-", "timm architecture", nullable=True),
        Column("model_version", pa.string(), "-", "catalog spec version of the model", nullable=True),
        Column("weights_policy", pa.string(), "-", "requested weights: `auto`, `hub`, `file` or `random`"),
        Column(
            "weights",
            pa.string(),
            "-",
            "weights actually used (`hub`, `file`, `random`); null if the model never loaded",
            nullable=True,
        ),
        Column("weights_sha256", pa.string(), "-", "sha256 of the loaded state dict / checkpoint", nullable=True),
        Column(
            "key_mapping",
            pa.string(),
            "-",
            "how a `file` checkpoint's keys were mapped onto the architecture, as JSON (`rename` rules, `timm_filter` "
            "applied, `by_order`: the spec's `key_map`); null when they fit as stored, for hub and random weights, and "
            "in rows before schema 4",
            nullable=True,
        ),
        Column("dataset", pa.string(), "-", "catalog dataset name"),
        Column("role", pa.string(), "-", "dataset role", nullable=True),
        Column(
            "dataset_fingerprint",
            pa.string(),
            "-",
            "content fingerprint of the decoded dataset (catalog `ImageSet.fingerprint`)",
        ),
        Column("dataset_version", pa.string(), "-", "catalog spec version of the dataset", nullable=True),
        Column(
            "metric_version",
            pa.string(),
            "-",
            "version of the metric implementation (liecore `__version__` plus family)",
        ),
        Column(
            "key_json",
            pa.string(),
            "-",
            "canonical JSON the unit key hashes (model spec, dataset, family config, versions)",
        ),
        Column(
            "config_json",
            pa.string(),
            "-",
            "the family config as JSON (generators, output, interpolation, method, probes, metrics, ...)",
        ),
        Column(
            "data_config_json",
            pa.string(),
            "-",
            "timm's resolved eval data config of the loaded model as JSON (input_size, interpolation, crop_pct, "
            "crop_mode, mean, std); null if the model never loaded or the row predates schema 3",
            nullable=True,
        ),
        Column(
            "seed",
            pa.int64(),
            "-",
            "seed of the unit; random draws of image i use a generator seeded with (seed, i) "
            "(`pipelines.spec.families.image_seed`)",
        ),
        Column("n_images", pa.int32(), "images", "images the unit was asked to evaluate"),
        Column(
            "n_skipped",
            pa.int32(),
            "images",
            "images of the dataset's seeded subset that could not be read, or were needed and could not be decoded: "
            "skipped, the next decodable ones used instead (the subset is read whole for the fingerprint); null in "
            "rows before schema 4",
            nullable=True,
        ),
        Column(
            "skipped_json",
            pa.string(),
            "-",
            'JSON list of the skipped images, `[{"id": image_id, "reason": message}, ...]` in id order '
            "(at most 1000; `n_skipped` has the count); null in rows before schema 4",
            nullable=True,
        ),
        Column("n_rows", pa.int64(), "rows", "data rows written (0 for failed units)"),
        Column(
            "data_sha256",
            pa.string(),
            "-",
            "sha256 (hex) of the unit's data file, of the bytes as written; null for failed units and rows before "
            "schema 6 (not checkable: see docs/integrity.md)",
            nullable=True,
        ),
        Column(
            "data_bytes",
            pa.int64(),
            "bytes",
            "size of the unit's data file as written; null as for `data_sha256`",
            nullable=True,
        ),
        Column(
            "data_stamp",
            pa.string(),
            "-",
            "what the store's listing said of the data file just after it was written: `etag:<ETag>` on object stores, "
            "`mtime:<seconds>` on local and other filesystems; a listing that says otherwise means the file was "
            "rewritten since (its checksum is then compared); null if the store gives neither, and as for "
            "`data_sha256`",
            nullable=True,
        ),
        Column(
            "batch_size", pa.int32(), "images", "batch size finally used (after out-of-memory halving)", nullable=True
        ),
        Column(
            "attempt",
            pa.int32(),
            "-",
            "how many times the unit has been started, this attempt included (1 = first; the previous row's + 1, read "
            "under the unit's lock, so concurrent runs on a local root count truly)",
        ),
        Column("error_type", pa.string(), "-", "exception class of a failed unit", nullable=True),
        Column("error", pa.string(), "-", "error message and traceback tail of a failed unit", nullable=True),
        Column("started_at", pa.timestamp("us", tz="UTC"), "UTC", "when the unit started"),
        Column("finished_at", pa.timestamp("us", tz="UTC"), "UTC", "when the unit finished (or failed)"),
        Column("load_s", pa.float64(), "s", "model build + preprocessing time", nullable=True),
        Column("compute_s", pa.float64(), "s", "liecore compute time", nullable=True),
        Column("wall_s", pa.float64(), "s", "total wall time of the unit in its actor"),
        Column("images_per_s", pa.float64(), "images/s", "n_images / compute_s", nullable=True),
        Column("sweep_id", pa.string(), "-", "id of the `lee eval` invocation that produced this row"),
        Column(
            "package_versions",
            pa.string(),
            "-",
            "JSON: python, lee-eval, liecore, catalog, pipelines (the lee-eval version where a package has none of its "
            "own), torch (with its build), timm, ray, pyarrow, duckdb, fsspec, numpy",
        ),
        Column(
            "git_rev",
            pa.string(),
            "-",
            "revision of the sweep's code, as the driver saw it: `LEE_GIT_REV` if set (`lee submit` sets it), else "
            "`HEAD` of the working directory's git checkout, else of the package's (with `-dirty` if modified), else "
            "`lee-eval==<version>` (the installed package's recorded version); null if none is known",
            nullable=True,
        ),
        Column(
            "hostname",
            pa.string(),
            "-",
            "host name of the machine that ran the unit (the same for every Ray node of one machine: see `node_id`)",
        ),
        Column(
            "node_id",
            pa.string(),
            "-",
            "Ray node id (hex) of the node whose worker ran the unit; null when the driver wrote the row (an actor "
            "that died) or the row predates schema 4",
            nullable=True,
        ),
        Column(
            "pid",
            pa.int64(),
            "-",
            "process id of the worker that ran the unit on that node; null as for `node_id`",
            nullable=True,
        ),
        Column("hardware", pa.string(), "-", "device used (`cpu (N threads)` or the CUDA device name)"),
        Column("schema_version", pa.string(), "-", "`pipelines.store.schema.SCHEMA_VERSION` of the writer"),
    ),
    ("unit",),
)

TABLES: dict[str, Table] = {t.name: t for t in (LEE, LAYERWISE, ALT, EXPLAIN, RUNS)}
"""Table name -> :class:`Table`. The metric families are the data tables ``lee``, ``layerwise``, ``alt``."""


def partition_value(value: str) -> str:
    """Percent-encode a partition value for a ``key=value`` directory name."""
    return urllib.parse.quote(str(value), safe="._-+@")


def data_path(root: str, table: str, model: str, dataset: str, unit: str) -> str:
    """Directory of one unit's data files in ``table``."""
    return f"{root.rstrip('/')}/{table}/model={partition_value(model)}/dataset={partition_value(dataset)}/unit={unit}"


def runs_path(root: str, unit: str) -> str:
    """Directory of one unit's ``runs`` row."""
    return f"{root.rstrip('/')}/runs/unit={unit}"


def history_data_path(root: str, table: str, model: str, dataset: str, unit: str, weights_sha256: str) -> str:
    """Directory of a unit's data file as it was with the weights ``weights_sha256`` (kept when they changed)."""
    return (
        f"{root.rstrip('/')}/{HISTORY_DIR}/{table}/model={partition_value(model)}/dataset={partition_value(dataset)}"
        f"/unit={unit}/weights_sha256={partition_value(weights_sha256)}"
    )


def history_runs_path(root: str, unit: str, weights_sha256: str) -> str:
    """Directory of a unit's ``runs`` row as it was with the weights ``weights_sha256``."""
    return f"{root.rstrip('/')}/{HISTORY_DIR}/runs/unit={unit}/weights_sha256={partition_value(weights_sha256)}"


def markdown() -> str:
    """All tables as README markdown."""
    parts = []
    for t in TABLES.values():
        parts.append(f"### `{t.name}`\n\n{t.doc} Partitioned by {', '.join(t.partition_by)}.\n\n{t.markdown()}\n")
    return "\n".join(parts)
