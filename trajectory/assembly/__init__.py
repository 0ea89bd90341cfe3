"""5. Events to records: one shard's events placed, sorted, cleaned, windowed and packed into
per-patient records (assemble), with its numba kernels (kernels_sort, kernels_text). The format
itself is trajectory/record.py."""
