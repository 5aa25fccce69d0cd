"""What a sweep is: its config and flags (checked without torch), the metric families, the datasets, and the
environment it records."""
