"""What the hooks build on: a duckling's role credentials and storage, DuckDB's offline extensions, DuckLake's metadata tables, connection extras, the naming of ClickHouse statements."""
