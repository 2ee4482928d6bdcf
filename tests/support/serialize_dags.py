"""Parse a DAG folder the way the dag-processor does and print every DAG's serialized form and hash.

Run as a script (``python serialize_dags.py DAGS_FOLDER OUT.json``), one parse per process: a value that differs
between two runs (a memory address, a time) is what would make Airflow write a new DAG version per parse.
"""

from __future__ import annotations

import json
import sys


def main(dags_folder: str, out_path: str) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import LazyDeserializedDAG

    bag = DagBag(dag_folder=dags_folder)
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    out = {}
    for dag_id, dag in sorted(bag.dags.items()):
        lazy = LazyDeserializedDAG.from_dag(dag)  # what the dag-processor sends to write_dag
        out[dag_id] = {"hash": lazy.hash, "data": lazy.data}
    with open(out_path, "w") as f:  # not stdout: Airflow logs there
        json.dump(out, f, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
