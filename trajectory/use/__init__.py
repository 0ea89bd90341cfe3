"""6. Using a finished version: read it (store), show a patient (timeline), label it (tasks),
export it (meds, deid, windows_table). Never the raw input, never changing a record."""
