"""2. Rows to events: the table -> event mapping as data (tables, extra_tables), which input
files are read and how they are cut into units and shards (inputs, plan), and the row -> event
function (map_rows)."""
