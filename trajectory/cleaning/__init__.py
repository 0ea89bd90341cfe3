"""3. Cleaning and QC: what the whole partition stage gives the build once (vocab: code ids,
outlier thresholds, shard map), the rules that flag or drop an event (flags, with its numba
kernels in kernels_qc), and the cleaning part of the QC report (qc_report, qc_html)."""
