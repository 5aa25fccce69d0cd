-- lee analysis views, part 3: the layerwise decomposition.
--
-- Rows of the layerwise table (kind = 'layer' | 'end_to_end' | 'unattributed'). `share` is the signed
-- additive share <c_i, L_X F> / dim(out): per image and generator the layer shares plus the
-- unattributed share sum to the end-to-end value. Files written before `share` existed have it NULL;
-- there `share` falls back to `value` (not additive; `share_additive` says which).

-- liecore.layer_kind(cls) in SQL (same rules, same order; tests/analysis checks they agree), for rows
-- written before the `layer_kind` column existed.
CREATE OR REPLACE MACRO lee_layer_kind(cls) AS CASE
    WHEN cls IS NULL OR cls = '' THEN NULL
    WHEN regexp_matches(cls, 'PatchEmbed|HybridEmbed|Stem|ConvPosEnc') THEN 'patch_embedding'
    WHEN regexp_matches(cls, 'Attention|Attn|MultiheadAttention') THEN 'attention'
    WHEN regexp_matches(cls, 'SqueezeExcite|SEModule|SEBlock|Eca|GatherExcite|Cbam|Excitation') THEN 'squeeze_excitation'
    WHEN regexp_matches(cls, 'MixerBlock|ResBlock|GatingBlock|SwinTransformer') THEN 'mixer_block'
    WHEN regexp_matches(cls, 'NormAct|EvoNorm') THEN 'normalization_activation'
    WHEN regexp_matches(cls, 'Norm|Affine') THEN 'normalization'
    WHEN regexp_matches(cls, 'Pool|Downsample|BlurPool|PixelUnshuffle|Flatten') THEN 'downsampling'
    WHEN regexp_matches(cls, 'Conv') THEN 'convolution'
    WHEN regexp_matches(cls, 'ReLU|GELU|SiLU|Swish|Sigmoid|Tanh|Mish|Hardswish|Hardsigmoid|ELU|Softplus|QuickGELU|Act|Softmax|Gate') THEN 'activation'
    WHEN regexp_matches(cls, 'Linear') THEN 'linear'
    WHEN regexp_matches(cls, 'Dropout|DropPath|DropBlock') THEN 'dropout'
    WHEN regexp_matches(cls, 'LayerScale|Scale') THEN 'scale'
    ELSE 'other'
END;

-- The report's layer types, from liecore's coarse layer kinds.
CREATE OR REPLACE MACRO lee_layer_type(kind) AS CASE kind
    WHEN 'patch_embedding' THEN 'patch embedding'
    WHEN 'convolution' THEN 'convolution'
    WHEN 'normalization' THEN 'normalization'
    WHEN 'normalization_activation' THEN 'normalization+activation'
    WHEN 'activation' THEN 'activation'
    WHEN 'downsampling' THEN 'downsampling/pooling'
    WHEN 'attention' THEN 'attention'
    WHEN 'linear' THEN 'MLP'
    WHEN 'mixer_block' THEN 'composite block'
    WHEN 'unattributed' THEN 'unattributed'
    WHEN 'end_to_end' THEN 'end_to_end'
    ELSE 'other'
END;

-- Visible layerwise rows with layer_kind filled in, the report's layer_type, and share.
CREATE OR REPLACE VIEW layerwise AS
SELECT
    * REPLACE (
        coalesce(layer_kind, CASE WHEN kind = 'layer' THEN lee_layer_kind(layer_class) ELSE kind END) AS layer_kind,
        coalesce(share, value) AS share
    ),
    lee_layer_type(coalesce(layer_kind, CASE WHEN kind = 'layer' THEN lee_layer_kind(layer_class) ELSE kind END))
        AS layer_type,
    share IS NOT NULL AS share_additive
FROM layerwise_visible;

-- The configuration of a layerwise result, beyond model, dataset, generator and weights: output (probs /
-- logits), interpolation, decomposition method and its num_probes (NULL for 'exact'). Each view below
-- groups and joins on all of them, so results of two configurations of one model (both count, see
-- current_items) are never averaged together; num_probes and older rows' NULLs are matched with
-- IS NOT DISTINCT FROM.

-- Per model, dataset, generator, configuration and layer call: mean contribution over images, and its
-- fraction of the mean end-to-end LEE.
CREATE OR REPLACE VIEW layerwise_layers AS
WITH e2e AS (
    SELECT model, dataset, generator, weights, output, interpolation, method, num_probes,
           avg(value) AS end_to_end, count(*) AS n
    FROM layerwise WHERE kind = 'end_to_end'
    GROUP BY ALL
),
lay AS (
    SELECT
        model, dataset, role, generator, weights, output, interpolation, method, num_probes,
        layer, call_index, layer_class, layer_kind, layer_type,
        avg(value) AS mean_value,
        avg(share) AS mean_share,
        bool_and(share_additive) AS share_additive,
        count(*) AS n
    FROM layerwise WHERE kind = 'layer'
    GROUP BY ALL
)
SELECT lay.*, e2e.end_to_end, lay.mean_share / nullif(e2e.end_to_end, 0) AS share_fraction
FROM lay JOIN e2e
    ON lay.model = e2e.model AND lay.dataset = e2e.dataset AND lay.generator = e2e.generator
   AND lay.weights IS NOT DISTINCT FROM e2e.weights AND lay.output IS NOT DISTINCT FROM e2e.output
   AND lay.interpolation IS NOT DISTINCT FROM e2e.interpolation AND lay.method IS NOT DISTINCT FROM e2e.method
   AND lay.num_probes IS NOT DISTINCT FROM e2e.num_probes;

-- Figure 4: cumulative contribution by layer order. depth = call position scaled to [0, 1].
CREATE OR REPLACE VIEW layerwise_cumulative AS
SELECT
    l.*,
    (row_number() OVER w - 1) / greatest(count(*) OVER (
        PARTITION BY model, dataset, generator, weights, output, interpolation, method, num_probes) - 1, 1)
        AS depth,
    sum(share_fraction) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cumulative_fraction
FROM layerwise_layers l
WINDOW w AS (PARTITION BY model, dataset, generator, weights, output, interpolation, method, num_probes
             ORDER BY call_index, layer);

-- Share of the end-to-end LEE by layer type (unattributed included; the fractions sum to 1 when
-- shares are additive), per model, dataset, generator and configuration. n = images.
CREATE OR REPLACE VIEW layer_type_shares AS
WITH per AS (
    SELECT model, dataset, role, generator, weights, output, interpolation, method, num_probes, layer_type,
           sum(share) AS share, bool_and(share_additive) AS share_additive
    FROM layerwise WHERE kind IN ('layer', 'unattributed')
    GROUP BY ALL
),
e2e AS (
    SELECT model, dataset, generator, weights, output, interpolation, method, num_probes,
           sum(value) AS end_to_end, count(*) AS n
    FROM layerwise WHERE kind = 'end_to_end'
    GROUP BY ALL
)
SELECT
    per.model, per.dataset, per.role, per.generator, per.weights, per.output, per.interpolation, per.method,
    per.num_probes, per.layer_type,
    per.share / nullif(e2e.end_to_end, 0) AS share_fraction,
    per.share / e2e.n AS mean_share,
    e2e.end_to_end / e2e.n AS mean_end_to_end,
    e2e.n, per.share_additive,
    m.family
FROM per
JOIN e2e
    ON per.model = e2e.model AND per.dataset = e2e.dataset AND per.generator = e2e.generator
   AND per.weights IS NOT DISTINCT FROM e2e.weights AND per.output IS NOT DISTINCT FROM e2e.output
   AND per.interpolation IS NOT DISTINCT FROM e2e.interpolation AND per.method IS NOT DISTINCT FROM e2e.method
   AND per.num_probes IS NOT DISTINCT FROM e2e.num_probes
LEFT JOIN models m ON per.model = m.model;
