"""P3: how long the dag-processor spends on a generated DAG file when the registry holds 5,000 teams.

A registry of 5,000 ducklings (all with start dates, so every DAG is scheduled) is written to a temp dir;
then, in a fresh child process per measurement with the Airflow environment of
``airflow_env.airflow_environment``, the steps a dag-processor's parsing process runs for one file are timed
the way ``airflow.dag_processing.processor`` runs them:

* import — the module's execution, the span ``[core] dagbag_import_timeout`` (default 30 s) bounds;
* DagBag — the import plus bagging every DAG (``BundleDagBag``, what ``_parse_file`` builds);
* processor — DagBag, serialising every DAG (``_serialize_dags``) and encoding the result message sent to
  the manager: what ``[dag_processor] dag_file_processor_timeout`` (default 50 s) bounds.

The layout: ``--shards N`` copies ``dags/duckling_backfill.py`` as ``duckling_backfill_shard_0_of_N.py``
(the factory then builds the teams with ``team_id % N == 0`` and the housekeeping DAGs: the largest of the
N files) and parses that; ``--shards 1`` parses one file that builds every team. The baseline is a scratch
DAG file, written here, that builds as many DAGs of the same shape with bare Airflow (same DAG arguments,
Params, default_args, pool; ``TimeDeltaSensor >> EmptyOperator >> EmptyOperator``), measured in the same
run. Ratio = ours ÷ bare, on CPU time. ``--profile`` adds a cProfile run of our file.

    .venv/bin/python bench/p3_dag_parse.py [--teams 5000] [--shards 10] [--runs 3] [--profile] [--quick]
    .venv/bin/python bench/p3_dag_parse.py --shards 1 --runs 1     # one file for all 5,000 teams (~7 min)
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _stack

IMPORT_TIMEOUT, PROCESSOR_TIMEOUT, GOAL = 30.0, 50.0, 1.3
OUR_DAG_FILE = _stack.REPO_ROOT / "dags" / "duckling_backfill.py"

BARE_DAG_FILE = '''"""Bare Airflow: {dags} DAGs shaped like the generated duckling DAGs (a benchmark baseline)."""
import datetime as dt

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

DOC = {doc!r}
OPTIONS = {options!r}
SETTLE = dt.timedelta(minutes=120)


def params(table):
    out = {{"partition_key": Param(None, type=["null", "string"], pattern=r"^[0-9]+_[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}$",
                                   title="Partition", description="Run this partition instead of the run's own day.")}}
    for name, (default, description) in OPTIONS.items():
        kind = "object" if isinstance(default, dict) else "boolean"
        out[name] = Param(default, type=kind, description=description, title=name.replace("_", " ").capitalize())
    if table == "persons":
        out["full_export"] = Param(False, type="boolean", title="Full export", description="Export all persons.")
    return out


for team in range(1, {teams} + 1):
    for table in ("events", "persons"):
        with DAG(
            dag_id=f"bare_{{table}}_backfill_team_{{team}}",
            description=f"Back-fill and daily top-up of {{table}} into team {{team}}'s duckling",
            schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
            start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
            catchup=True,
            max_active_runs=4,
            default_args={{"owner": "duckling", "retries": 3, "retry_delay": dt.timedelta(seconds=120),
                          "retry_exponential_backoff": True, "max_retry_delay": dt.timedelta(hours=1)}},
            is_paused_upon_creation=False,
            render_template_as_native_obj=True,
            params=params(table),
            tags=["duckling", table, f"team:{{team}}"],
            doc_md=DOC,
        ) as dag:
            wait = TimeDeltaSensor(task_id="wait_for_late_events", delta=SETTLE, mode="reschedule", poke_interval=300,
                                   timeout=SETTLE.total_seconds() + 6 * 3600, doc_md="Waits for late events.")
            export = EmptyOperator(task_id="export", pool="duckling_exports", execution_timeout=dt.timedelta(hours=3))
            register = EmptyOperator(task_id="register", max_active_tis_per_dag=1,
                                     execution_timeout=dt.timedelta(hours=1))
            wait >> export >> register
        globals()[dag.dag_id] = dag
'''


def parse(file: str, profile_to: str | None) -> None:
    """The child: what a dag-processor's parsing process does for ``file``, timed step by step."""
    import cProfile
    import resource

    import structlog
    from airflow.dag_processing import processor
    from airflow.dag_processing.importers import python_importer
    from airflow.sdk.execution_time.comms import _RequestFrame

    log = structlog.get_logger()
    processor._pre_import_airflow_modules(file, log)  # the manager does this before it forks
    spans: list[tuple[float, float]] = []  # (wall, CPU) of the module's execution
    real_timeout = python_importer._timeout

    class timed_timeout:
        """``_timeout`` as Airflow uses it around the module's execution, also measuring that span."""

        def __init__(self, *args, **kwargs):
            self._inner = real_timeout(*args, **kwargs)

        def __enter__(self):
            self._start = (time.perf_counter(), time.process_time())
            return self._inner.__enter__()

        def __exit__(self, *exc):
            spans.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))
            return self._inner.__exit__(*exc)

    python_importer._timeout = timed_timeout
    profiler = cProfile.Profile() if profile_to else None
    if profiler:
        profiler.enable()
    marks = [(time.perf_counter(), time.process_time())]
    bag = processor.BundleDagBag(dag_folder=file, bundle_path=Path(file).parent, bundle_name="dags-folder",
                                 load_op_links=False)
    marks.append((time.perf_counter(), time.process_time()))
    serialized, errors = processor._serialize_dags(bag, log)
    marks.append((time.perf_counter(), time.process_time()))
    result = processor.DagFileParsingResult(fileloc=file, serialized_dags=serialized,
                                            import_errors={**bag.import_errors, **errors})
    size = len(_RequestFrame(id=0, body=result.model_dump()).as_bytes())
    marks.append((time.perf_counter(), time.process_time()))
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile_to)
    out = {"dags": len(bag.dags), "errors": list(result.import_errors.values())[:1],
           "import_s": spans[0][0] if spans else None, "import_cpu": spans[0][1] if spans else None,
           "message_mib": size / 2**20, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    for key, (a, b) in (("dagbag", (0, 1)), ("serialize", (1, 2)), ("encode", (2, 3)), ("processor", (0, 3))):
        out[f"{key}_s"] = marks[b][0] - marks[a][0]
        out[f"{key}_cpu"] = marks[b][1] - marks[a][1]
    print(json.dumps(out), flush=True)


def run_child(file: Path, env: dict[str, str], profile_to: Path | None = None) -> dict:
    command = [sys.executable, __file__, "--parse", str(file)]
    if profile_to:
        command += ["--profile-to", str(profile_to)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"parsing {file.name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise RuntimeError(f"{file.name} has import errors: {result['errors'][0][-2000:]}")
    return result


def write_registry(path: Path, teams: int) -> None:
    from airflow_provider_duckling.registry.catalog import Duckling, write_registry

    write_registry([Duckling(
        team_id=t, bucket=f"duckling-team-{t}", bucket_region="us-east-1", db_host="catalog.example.internal",
        db_name=f"duckling_{t}", cross_account_role_arn=f"arn:aws:iam::111122223333:role/duckling-{t}",
        cross_account_external_id=f"posthog-{t}", start_date=dt.date(2024, 1, 1),
    ) for t in range(1, teams + 1)], path)


def bare_file(path: Path, teams: int) -> None:
    from airflow_provider_duckling.registry.options import OPTION_DOCS

    source = (_stack.REPO_ROOT / "airflow_provider_duckling" / "scheduling" / "dag_factory.py").read_text()
    doc = ast.get_docstring(ast.parse(source)) or ""
    path.write_text(BARE_DAG_FILE.format(dags=2 * teams, teams=teams, doc=doc, options=dict(OPTION_DOCS)))


def print_profile(path: Path, top: int) -> None:
    import pstats

    sections = (("cumulative", (top,)), ("tottime", (top,)),
                ("cumulative", ("airflow_provider_duckling|duckling_backfill", top)))
    for order, restrictions in sections:
        which = "our package's functions" if len(restrictions) > 1 else "all functions"
        print(f"\ncProfile of our file ({which}), top {top} by {order}:")
        stats = pstats.Stats(str(path))
        stats.sort_stats(order).print_stats(*restrictions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, default=5000, help="ducklings in the registry (2 DAGs each)")
    parser.add_argument("--shards", type=int, nargs="+", default=[10],
                        help="layouts to measure: N = the DAG files are ..._shard_K_of_N.py and shard 0 (the largest:"
                             " it also holds the housekeeping DAGs) is parsed; 1 = one file for every team (at 5,000"
                             " teams about 7 min a run)")
    parser.add_argument("--runs", type=int, default=3, help="parses per file (median)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one parse of our (first) file")
    parser.add_argument("--top", type=int, default=25, help="cProfile entries to print")
    parser.add_argument("--quick", action="store_true", help="500 teams, one run")
    parser.add_argument("--parse", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parse:
        parse(args.parse, args.profile_to)
        return
    if args.quick:
        args.teams, args.runs = 500, 1

    root = _stack.workdir("p3")
    try:
        registry = root / "ducklings.yaml"
        write_registry(registry, args.teams)
        reports = [measure_layout(root, registry, args, shards) for shards in args.shards]
    finally:
        _stack.remove(root)
    for report in reports:
        print(report)


def measure_layout(root: Path, registry: Path, args, shards: int) -> str:
    """Parse our DAG file (shard 0 of ``shards``) and a bare file of as many DAGs, ``args.runs`` times each."""
    from airflow_provider_duckling.scheduling.airflow_env import airflow_environment

    layout = root / f"shards-{shards}"
    ours_dir, bare_dir = layout / "dags", layout / "bare_dags"
    ours_dir.mkdir(parents=True)
    bare_dir.mkdir()
    ours = ours_dir / (OUR_DAG_FILE.name if shards == 1 else f"{OUR_DAG_FILE.stem}_shard_0_of_{shards}.py")
    shutil.copy(OUR_DAG_FILE, ours)
    teams = sum(1 for team in range(1, args.teams + 1) if team % shards == 0)
    bare = bare_dir / "bare_backfill.py"
    bare_file(bare, teams)
    print(f"{ours.name}: {teams:,} of {args.teams:,} teams", flush=True)

    def env_for(name: str, folder: Path) -> dict[str, str]:
        home = layout / f"home-{name}"
        home.mkdir(exist_ok=True)
        return {**os.environ, **airflow_environment(home, registry, folder), "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                # measured in full here, compared with the default 30 s below
                "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "3600"}

    results: dict[str, list[dict]] = {"ours": [], "bare": []}
    for run in range(args.runs):
        for name, file in (("ours", ours), ("bare", bare)):
            result = run_child(file, env_for(name, file.parent))
            results[name].append(result)
            print(f"run {run + 1} {name}: {result['dags']:,} DAGs, wall (CPU): import {result['import_s']:.1f} s "
                  f"({result['import_cpu']:.1f}), DagBag {result['dagbag_s']:.1f} ({result['dagbag_cpu']:.1f}), "
                  f"serialize {result['serialize_s']:.1f} ({result['serialize_cpu']:.1f}), processor "
                  f"{result['processor_s']:.1f} ({result['processor_cpu']:.1f}), {result['maxrss_mib']:.0f} MiB",
                  flush=True)
    registry_cpu = registry_load_cpu(registry, env_for("ours", ours.parent))
    if args.profile and shards == args.shards[0]:
        run_child(ours, env_for("ours", ours.parent), layout / "ours.prof")
        print_profile(layout / "ours.prof", args.top)

    def med(name: str, key: str) -> float:
        return _stack.median([r[key] for r in results[name]])

    rows = []
    for key, label, limit in (("import", "import (module execution)", IMPORT_TIMEOUT),
                              ("dagbag", "DagBag (import + bagging)", None),
                              ("serialize", "serialize DAGs", None),
                              ("processor", "processor total (+ result message)", PROCESSOR_TIMEOUT)):
        ours_wall, base_wall = med("ours", f"{key}_s"), med("bare", f"{key}_s")
        ours_cpu, base_cpu = med("ours", f"{key}_cpu"), med("bare", f"{key}_cpu")
        ratio = ours_cpu / base_cpu
        timeout = ""
        if limit:
            timeout = (f"{limit:.0f} s: wall {'PASS' if ours_wall <= limit else 'MISS'}, "
                       f"CPU {'PASS' if ours_cpu <= limit else 'MISS'}")
        rows.append([label, f"{ours_wall:.1f} s", f"{ours_cpu:.1f} s", f"{base_wall:.1f} s", f"{base_cpu:.1f} s",
                     f"{ours_wall / base_wall:.2f}", f"{ratio:.2f}", f"≤ {GOAL}", _stack.verdict(ratio, GOAL), timeout])
    dags = results["ours"][0]["dags"]
    what = "one DAG file for every team" if shards == 1 else f"DAG file shard 0 of {shards}"
    return "\n".join([
        f"\nP3 {what}: {args.teams:,} teams × 2 tables in the registry, {dags:,} DAGs in this file (incl. "
        f"housekeeping), median of {args.runs} run(s). CPU = the parsing process's own CPU time, i.e. its wall time"
        " on an otherwise idle machine (parsing is one thread); the ratio is taken on CPU, wall is shown too.",
        _stack.table(["step", "ours wall", "ours CPU", "bare wall", "bare CPU", "ratio wall", "ratio CPU", "goal",
                      "result", "timeout (ours)"], rows),
        f"of our import, loading the {args.teams:,}-entry registry (load_dag_inputs): {registry_cpu:.1f} s CPU",
        f"peak RSS of the parsing process: ours {med('ours', 'maxrss_mib'):.0f} MiB, bare {med('bare', 'maxrss_mib'):.0f}"
        f" MiB; result message ours {med('ours', 'message_mib'):.0f} MiB, bare {med('bare', 'message_mib'):.0f} MiB",
    ])


def registry_load_cpu(registry: Path, env: dict[str, str]) -> float:
    """CPU seconds of ``load_dag_inputs()`` (registry + remembered dates), in a fresh process that has
    imported Airflow, like a parsing process."""
    code = ("import time\nimport airflow.configuration\nfrom airflow_provider_duckling.registry.state import load_dag_inputs\n"
            "start = time.process_time()\nload_dag_inputs()\nprint(time.process_time() - start)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
