"""1. Reading the input: raw MIMIC-IV files (.csv.gz, .csv, .parquet) to Arrow batches: readers
with explicit schemas (read), seek points into a .csv.gz (gzindex), cutting a CSV into byte
ranges on record boundaries (csv_ranges)."""
