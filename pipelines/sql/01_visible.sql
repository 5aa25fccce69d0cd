-- lee analysis views, part 1: only completed work units (the store's visibility rule), one result per
-- configuration.
--
-- A unit's data rows count only when its `runs` row has status = 'done' (pipelines/store/schema.py). Data
-- files of units that failed, or whose `runs` row is missing (still running, crashed), are excluded
-- here, so every view below sees completed work only; so are done units whose data file is damaged
-- (damaged_units, 00_sources.sql).

-- Every work unit's latest attempt (done or failed), all columns, read from the files when queried.
CREATE OR REPLACE VIEW runs AS
SELECT * FROM runs_files
QUALIFY row_number() OVER (PARTITION BY unit ORDER BY finished_at DESC NULLS LAST, attempt DESC NULLS LAST) = 1;

-- The units whose data is visible (status = 'done'), with what they computed: `items` = the generators
-- (lee, layerwise) or metrics (alt) of the unit's config, plus the config fields that change the numbers.
--
-- A table, not a view: a snapshot taken when this script runs. Units that finish later (a sweep still
-- writing) stay invisible until the script runs again (`lee query` / `connect()` run it every time), so
-- a query never sees half a unit, and every query joins a small in-memory table instead of re-reading
-- thousands of runs files.
CREATE OR REPLACE TABLE done_units AS
SELECT
    unit, family, model, weights, weights_policy, dataset, role, n_images, seed, metric_version, sweep_id,
    finished_at,
    CAST(json_extract(config_json, CASE WHEN family = 'alt' THEN '$.metrics' ELSE '$.generators' END) AS VARCHAR[])
        AS items,
    coalesce(json_extract_string(config_json, '$.output'), 'probs') AS output,
    -- layerwise / explain: liecore interpolates with 'cubic' when the config names none; alt: the config
    -- has no interpolation (each metric uses its own default), so it stays NULL
    CASE WHEN family IN ('layerwise', 'explain') THEN coalesce(json_extract_string(config_json, '$.interpolation'), 'cubic')
         ELSE json_extract_string(config_json, '$.interpolation') END AS interpolation,
    json_extract_string(config_json, '$.method') AS method,
    json_extract_string(config_json, '$.num_probes') AS num_probes
FROM runs
WHERE status = 'done' AND unit NOT IN (SELECT unit FROM damaged_units);

-- The result that counts for each configuration. Several runs of the same model, weights, dataset and
-- generator (or metric) with the same output / interpolation / method (a --limit 8 smoke run and a full
-- run, a rerun after a metric version change) would count the same images twice: per configuration and
-- item, the unit with the most images counts, and among equals the one that finished last. The other
-- units' rows stay in lee_all / layerwise_all / alt_all. (`lee eval` always records the item lists.)
-- A table computed from the done_units snapshot, like it.
CREATE OR REPLACE TABLE current_items AS
WITH items AS (
    SELECT unit, family, model, weights, dataset, role, unnest(items) AS item, output, interpolation, method,
           num_probes, n_images, finished_at
    FROM done_units
)
SELECT * EXCLUDE (num_probes) FROM items
QUALIFY row_number() OVER (
    PARTITION BY family, model, weights, dataset, item, output, interpolation, method, num_probes
    ORDER BY n_images DESC NULLS LAST, finished_at DESC, unit
) = 1;

-- Every visible row of every done unit (several runs of one configuration all included).
CREATE OR REPLACE VIEW lee_all AS
SELECT f.* FROM lee_files f SEMI JOIN done_units d ON f.unit = d.unit;

CREATE OR REPLACE VIEW layerwise_all AS
SELECT f.* FROM layerwise_files f SEMI JOIN done_units d ON f.unit = d.unit;

CREATE OR REPLACE VIEW alt_all AS
SELECT f.* FROM alt_files f SEMI JOIN done_units d ON f.unit = d.unit;

-- One row per image and generator: LEE of the model output (the counting unit of each configuration).
CREATE OR REPLACE VIEW lee AS
SELECT f.* FROM lee_files f
SEMI JOIN current_items c ON f.unit = c.unit AND f.generator = c.item;

-- One row per image, generator and layer call (counting units only); see 03_layerwise.sql. The rows do
-- not record the output (probs / logits) and interpolation their unit was computed with: they come from
-- the unit's config (current_items), so that units of one model that differ only in them (two
-- configurations that both count) stay apart in every view below. method / num_probes are row columns.
CREATE OR REPLACE VIEW layerwise_visible AS
SELECT f.*, c.output, c.interpolation FROM layerwise_files f
JOIN current_items c ON f.unit = c.unit AND f.generator = c.item;

-- One row per image and alternative metric (counting units only), with the unit's config `output`
-- (what the metric compares: probs / logits). Alt units have no interpolation setting (each metric
-- uses its own default): `interpolation` is NULL. ((unit, item) is unique in current_items: one row each.)
CREATE OR REPLACE VIEW alt AS
SELECT f.*, c.output, c.interpolation FROM alt_files f
JOIN current_items c ON f.unit = c.unit AND f.metric = c.item;

CREATE OR REPLACE VIEW explain_all AS
SELECT f.* FROM explain_files f SEMI JOIN done_units d ON f.unit = d.unit;

-- Where the LEE arises (liecore.explain; see 04_explain.sql): one row per image, generator and layer call
-- with a located error (kind 'layer'), unlocated shares ('special'), the image map ('image') and the
-- remainder, counting units only. The rows carry their output and interpolation.
CREATE OR REPLACE VIEW explain AS
SELECT f.* FROM explain_files f
SEMI JOIN current_items c ON f.unit = c.unit AND f.generator = c.item;
