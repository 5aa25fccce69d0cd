"""Analysis of a results store: DuckDB views (:mod:`.views`), statistics (:mod:`.stats`) and the paper's
named analyses (:mod:`.analyses`). ``lee sql`` prints the views, ``lee query`` runs SQL or an analysis."""
