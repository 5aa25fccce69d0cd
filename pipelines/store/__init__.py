"""The results store: its schema, the unit keys, atomic Parquet writing, integrity, weights history and
object-store leases."""
