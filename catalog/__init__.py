"""catalog: which models and datasets a sweep evaluates (data plus lookup)."""
