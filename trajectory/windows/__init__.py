"""4. Windows: which grids a patient gets and which values a window counts (grids), the checked
wrapper (aggregate) around the numba kernel (kernels_window)."""
