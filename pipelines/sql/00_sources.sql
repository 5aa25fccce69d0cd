-- lee analysis views, part 0: the raw files of each results table.
--
-- {{...}} placeholders are filled in by `lee sql` / pipelines.analysis.views_script(): each becomes
--   SELECT * FROM read_parquet('<root>/<table>/model=*/dataset=*/unit=*/*.parquet',
--                              hive_partitioning = true, hive_types = {...} [, union_by_name = true])
--   UNION ALL BY NAME <an empty SELECT typed from pipelines/store/schema.py>
-- so every column of the current schema exists (NULL in older files that lack it: evolving columns),
-- partition columns have pinned types, and a table with no files yet is an empty, typed view
-- (read_parquet alone fails on a glob that matches nothing). union_by_name is set only when the files
-- differ in schema: with it DuckDB reads the footer of every file at every query, so a filter on a
-- partition column (model = '...') would no longer keep the query to that partition's files.
-- These views hold every file, finished or not; use the views of 01_visible.sql.
--
-- The damaged_units placeholder becomes the done units whose data file is missing, does not read, or is not the file
-- the unit wrote (its size, or its listing stamp and then its sha256, differ from what its runs row
-- recorded; pipelines/store/integrity.py, docs/integrity.md), found when the script was made. Their files are
-- left out of the *_files views and the units out of done_units; `lee verify` lists them, `lee eval` redoes
-- them.

CREATE OR REPLACE TABLE damaged_units AS {{damaged_units}};

CREATE OR REPLACE VIEW runs_files AS {{source:runs}};
CREATE OR REPLACE VIEW lee_files AS {{source:lee}};
CREATE OR REPLACE VIEW layerwise_files AS {{source:layerwise}};
CREATE OR REPLACE VIEW alt_files AS {{source:alt}};
CREATE OR REPLACE VIEW explain_files AS {{source:explain}};
