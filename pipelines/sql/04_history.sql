-- lee analysis views, part 4: the history of a unit's weights.
--
-- A unit's key names its checkpoint by path, so new weights under the same path (a checkpoint file
-- overwritten, a hub cache with another revision) keep the unit key: `lee reevaluate` redoes the unit
-- ("weights changed"), and before it does, the runner keeps the done attempt of the earlier weights
-- under <root>/history/ (its `runs` row and data file, partitioned by weights_sha256; see
-- pipelines/store/history.py). The views above show the latest weights only; these show every weights a
-- unit had, one result per unit and weights sha256 (the latest attempt of each).

CREATE OR REPLACE VIEW runs_history_files AS {{history:runs}};
CREATE OR REPLACE VIEW lee_history_files AS {{history:lee}};

-- One done `runs` row per unit and weights sha256: the unit's latest (latest = true, as in `runs`) and
-- those kept for its earlier weights (latest = false), newest first per unit.
CREATE OR REPLACE VIEW runs_history AS
WITH h AS (
    SELECT r.*, true AS latest FROM runs r SEMI JOIN done_units d ON r.unit = d.unit
    UNION ALL BY NAME
    SELECT f.*, false AS latest FROM runs_history_files f WHERE f.status = 'done'
)
SELECT * FROM h
QUALIFY row_number() OVER (
    PARTITION BY unit, weights_sha256 ORDER BY latest DESC, finished_at DESC NULLS LAST
) = 1;

-- How a model's LEE moved across its weights: per model, dataset, generator and weights sha256 (one row
-- per lee unit and weights), the mean LEE over images, its standard error and n, when that weights'
-- unit finished, and whether they are the latest (the ones lee / lee_summary show).
CREATE OR REPLACE VIEW lee_history AS
WITH h AS (
    SELECT unit, model, weights, dataset, weights_sha256, finished_at, latest,
           coalesce(json_extract_string(config_json, '$.output'), 'probs') AS output,
           json_extract_string(config_json, '$.interpolation') AS interpolation
    FROM runs_history
    WHERE family = 'lee'
),
rows AS (
    SELECT h.*, f.generator, f.value
    FROM lee_files f JOIN h ON f.unit = h.unit AND h.latest
    UNION ALL
    SELECT h.*, f.generator, f.value
    FROM lee_history_files f JOIN h ON f.unit = h.unit AND f.weights_sha256 = h.weights_sha256 AND NOT h.latest
)
SELECT
    model, dataset, generator, weights, weights_sha256, finished_at, latest, output, interpolation, unit,
    count(*) AS n,                                   -- images (rows) averaged
    avg(value) AS mean_lee,
    stddev_samp(value) / sqrt(count(*)) AS se_lee    -- standard error of mean_lee over images
FROM rows
GROUP BY ALL
ORDER BY model, dataset, generator, finished_at;
