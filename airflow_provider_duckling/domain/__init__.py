"""What the product moves, independent of any engine: partitions (keys, UTC days, object keys, DAG ids), the tables, persons' history rule."""
