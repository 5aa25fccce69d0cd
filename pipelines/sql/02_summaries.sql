-- lee analysis views, part 2: per-model summaries joined with the catalog metadata (`models`).
--
-- `models` (one row per model: family, params_m, pretrain_data, pretrain_images, recipe,
-- anti_aliased, top1, top5, top1_v2, top1_sketch, top1_r, top1_real, ...) is a table written from the
-- catalog by `lee sql` / pipelines.analysis.views (the script's models section, just above).
-- `weights` is the weights actually used: 'hub' / 'file' (pretrained) or 'random' (random init);
-- analyses never pool random-init rows with pretrained ones unless asked.

-- Per model, dataset and generator: mean LEE over images, its standard error and n.
CREATE OR REPLACE VIEW lee_summary AS
WITH s AS (
    SELECT
        model, dataset, role, generator, weights, output, interpolation,
        count(*) AS n,                                   -- images (rows) averaged
        count(DISTINCT unit) AS n_units,
        avg(value) AS mean_lee,
        stddev_samp(value) AS sd_lee,
        stddev_samp(value) / sqrt(count(*)) AS se_lee,   -- standard error of mean_lee over images
        median(value) AS median_lee,
        avg(mean_abs) AS mean_abs
    FROM lee
    GROUP BY ALL
)
SELECT
    s.*,
    ln(nullif(s.mean_lee, 0)) AS log_mean_lee,
    s.se_lee / nullif(s.mean_lee, 0) AS se_log_mean_lee,   -- delta method: error bar of log_mean_lee
    m.family, m.arch, m.params_m, m.pretrain_data, m.pretrain_images, m.recipe, m.anti_aliased,
    m.top1, m.top5, m.top1_v2, m.top1_sketch, m.top1_r, m.top1_real
FROM s
LEFT JOIN models m USING (model);

-- Per model, dataset, alternative metric and output (probs / logits; `interpolation` is NULL for alt
-- units, see 01_visible.sql): mean value over images, standard error and n.
CREATE OR REPLACE VIEW alt_summary AS
WITH s AS (
    SELECT
        model, dataset, role, metric, weights, output, interpolation, value_unit, higher_is_better,
        count(*) AS n,
        count(DISTINCT unit) AS n_units,
        avg(value) AS mean_value,
        stddev_samp(value) / sqrt(count(*)) AS se_value,
        -- StyleGAN3's statistic for the EQ metrics: the PSNR of the squared error pooled over every image and draw
        -- (total SSE over total mask count), not the mean of per-image PSNRs; NULL unless every row carries sse.
        CASE WHEN count(sse) = count(*) AND sum(mask_count) > 0 THEN
            CASE WHEN sum(sse) = 0 THEN 'inf'::DOUBLE
                 ELSE 20 * log10(max(peak_to_peak)) - 10 * log10(sum(sse) / sum(mask_count)) END
        END AS pooled_value
    FROM alt
    GROUP BY ALL
)
SELECT
    s.*,
    m.family, m.params_m, m.pretrain_data, m.recipe, m.top1, m.top1_v2, m.top1_sketch, m.top1_r, m.top1_real
FROM s
LEFT JOIN models m USING (model);

-- LEE next to the alternative metrics, one row per model, dataset, generator, output, interpolation and
-- metric (both averaged over their images): the input of the metric-agreement analysis. LEE and metric
-- of the same output only (a probs LEE is never paired with a logits metric); alt units have no
-- interpolation, so each metric pairs with the LEE of every interpolation (kept apart by `interpolation`).
CREATE OR REPLACE VIEW metric_pairs AS
SELECT
    l.model, l.dataset, l.role, l.weights, l.family, l.top1,
    l.generator, l.output, l.interpolation, l.mean_lee, l.log_mean_lee, l.n AS n_lee,
    a.metric, a.value_unit, a.mean_value, a.se_value, a.n AS n_metric, a.higher_is_better
FROM lee_summary l
JOIN alt_summary a ON l.model = a.model AND l.dataset = a.dataset AND l.weights = a.weights AND l.output = a.output;
