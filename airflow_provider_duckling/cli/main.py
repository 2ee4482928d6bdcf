"""``duckling``: the operators' command. Parses arguments and dispatches; each subcommand lives in its own
module, imported only when used, so ``duckling --help`` answers without loading Airflow.

Like the ``airflow`` command, it runs where Airflow is configured (``AIRFLOW_HOME`` / ``AIRFLOW__*``):
it reads the same registry, connections and metadata DB as the DAGs.

Exit codes: 0 fine · 1 a check found problems, a run failed, or something could not be reached ·
2 bad arguments or input (nothing was done).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console

from airflow_provider_duckling.cli.errors import PROBLEMS, USAGE, RunNotStarted, UsageError
from airflow_provider_duckling.cli.render import make_console
from airflow_provider_duckling.common.errors import quoted
from airflow_provider_duckling.common.log_guard import guard_logging

_LEVEL_VAR = "AIRFLOW__LOGGING__LOGGING_LEVEL"
_EPILOG = "Exit codes: 0 ok, 1 problems found / run failed, 2 bad arguments or input (nothing done)."


def _whole(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: ASCII digits only, within ``[low, high]`` (a bad value exits 2, nothing done)."""

    def parse(raw: str) -> int:
        if not re.fullmatch(r"-?[0-9]{1,12}", raw, flags=re.ASCII) or not low <= int(raw) <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {quoted(raw)}")
        return int(raw)

    return parse


def _seconds(low: float, high: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number of seconds within ``[low, high]`` (no nan, no inf)."""

    def parse(raw: str) -> float:
        value = float(raw) if re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,6})?", raw, flags=re.ASCII) else math.nan
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected seconds from {low:g} to {high:g}, got {quoted(raw)}")
        return value

    return parse


def _registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", metavar="PATH",
                        help="registry file (default: [duckling] registry_path, else ducklings.yaml in the DAGs folder)")


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of tables (secrets masked, as in the tables)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; handlers are ``module:function`` names resolved at dispatch."""
    parser = argparse.ArgumentParser(prog="duckling", description="Operate the ducklings: per-customer DuckLake lakes "
                                     "back-filled from ClickHouse by Airflow.", epilog=_EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="show Airflow's and the engines' log lines")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    setup = commands.add_parser(
        "setup", help="one-time setup: create (or resize) the export pool", epilog=_EPILOG,
        description="Creates the Airflow pool every export task runs in ([duckling] export_pool, default "
                    "duckling_exports). Exports in a pool that does not exist are never scheduled.")
    setup.add_argument("--export-slots", type=_whole(1, 10_000), metavar="N",
                       help="exports at once across all teams (default: [duckling] export_pool_slots, 8)")
    setup.set_defaults(handler="setup:run")

    catalog = commands.add_parser("catalog", help="the duckling registry: add, list, validate, pause, resume",
                                  epilog=_EPILOG)
    catalog_commands = catalog.add_subparsers(title="catalog commands", metavar="ACTION")
    catalog.set_defaults(handler=None, parser=catalog)

    add = catalog_commands.add_parser(
        "add", help="add a duckling (the new-duckling step)", epilog=_EPILOG,
        description="Validate a new registry entry as the DAG file will and append it atomically. A team that is "
                    "already registered, an invalid field, or a bucket/catalog of another team is refused (exit 2) "
                    "and nothing is written.")
    add.add_argument("--team-id", required=True)
    add.add_argument("--bucket", required=True, help="the duckling's S3 bucket")
    add.add_argument("--region", required=True, help="the bucket's AWS region, e.g. us-east-1")
    add.add_argument("--db-host", required=True, help="the catalog's PostgreSQL host")
    add.add_argument("--db-port", type=_whole(1, 65535), help="the catalog's port (default: the ducklake connection's, else 5432)")
    add.add_argument("--db-name", required=True, help="the catalog's database")
    add.add_argument("--role-arn", required=True, help="the cross-account role Airflow assumes")
    add.add_argument("--external-id", required=True, help="the role's external id ('-' reads it from stdin)")
    add.add_argument("--start-date", metavar="YYYY-MM-DD", help="first day to back-fill (default: discovered)")
    add.add_argument("--catalog-conn-id", help="ducklake connection with the catalog's login (default: ducklake_default)")
    add.add_argument("--export-identity", choices=("assumed_role", "clickhouse"),
                     help="how ClickHouse writes to the bucket: with the assumed role's credentials, or its own "
                          "identity (default: [duckling] export_identity)")
    _registry_option(add)
    add.set_defaults(handler="catalog:add")

    listing = catalog_commands.add_parser("list", help="show the registry (external ids masked)")
    _registry_option(listing)
    _json_option(listing)
    listing.set_defaults(handler="catalog:list_entries")

    for action, verb, effect in (("pause", "pause", "true: its DAGs stay visible and schedule nothing"),
                                 ("resume", "resume", "false: its DAGs schedule again")):
        toggle = catalog_commands.add_parser(
            action, help=f"{verb} one duckling (sets paused in the registry)", epilog=_EPILOG,
            description=f"Sets the entry's paused field to {effect}, from the DAG file's next parse. The registry "
                        "is rewritten atomically under the same lock as catalog add; an unknown team exits 2 and "
                        "writes nothing.")
        toggle.add_argument("team", metavar="TEAM")
        _registry_option(toggle)
        toggle.set_defaults(handler=f"catalog:{action}")

    validate = catalog_commands.add_parser(
        "validate", help="check that every piece of each duckling can be reached", epilog=_EPILOG,
        description="ClickHouse, and per duckling its connection, role, bucket and catalog, all read-only. "
                    "One line per problem; exit 1 if there is any.")
    validate.add_argument("teams", nargs="*", metavar="TEAM", help="only these teams (default: all)")
    validate.add_argument("--parallel", type=_whole(1, 64), default=4, help="ducklings checked at once (default 4)")
    _registry_option(validate)
    _json_option(validate)
    validate.set_defaults(handler="validate:run")

    status = commands.add_parser(
        "status", help="all teams worst lag first, or per team and table: latest day, lag, failed days, rows, bytes",
        epilog=_EPILOG,
        description="Without TEAM: one line per team, worst lag first, under totals (teams, behind, failing), from "
                    "Airflow's metadata DB alone (one query for run states, one for registrations). With TEAMs: "
                    "per table expected, registered, failed and running days, latest day, lag, rows, bytes, coverage.")
    status.add_argument("teams", nargs="*", metavar="TEAM", help="these teams in detail (default: a summary of all)")
    status.add_argument("--lake", dest="lake", action=argparse.BooleanOptionalAction, default=None,
                        help="attach the lakes (read-only) for their registered days (default: with TEAMs only)")
    status.add_argument("--parallel", type=_whole(1, 64), default=4, help="lakes read at once (default 4)")
    status.add_argument("--behind", action="store_true", help="only teams that lag, have failed days or wait for discovery")
    status.add_argument("--limit", type=_whole(0, 10_000_000), default=0, metavar="N",
                        help="show at most N teams (the worst); 0: all (default)")
    _registry_option(status)
    _json_option(status)
    status.set_defaults(handler="status:run")

    verify = commands.add_parser(
        "verify", help="reconcile ClickHouse with a duckling per day; exit 1 if any day differs", epilog=_EPILOG,
        description="Events: per UTC day, rows and a checksum of the export's own SELECT against the lake. "
                    "Persons: the team's current persons against the lake's persons_current view.")
    verify.add_argument("team", metavar="TEAM")
    verify.add_argument("--from", dest="since", metavar="DAY", help="first day (default: the team's start date)")
    verify.add_argument("--to", metavar="DAY", help="last day (default: yesterday, UTC)")
    verify.add_argument("--table", choices=("events", "persons"), default="events")
    _registry_option(verify)
    _json_option(verify)
    verify.set_defaults(handler="verify:run")

    run = commands.add_parser(
        "run", help="run one partition {team_id}_{YYYY-MM-DD} through Airflow, with options", epilog=_EPILOG,
        description="Validate, then trigger a manual DAG run (default; --wait follows it) or run it in this process "
                    "with dag.test() (--local). Options are the DAG's Params.")
    run.add_argument("partition_key", metavar="PARTITION_KEY", help="{team_id}_{YYYY-MM-DD}, e.g. 12345_2024-01-15, or a range of days moved as one "
                          "batch, {team_id}_{first}..{last}, e.g. 12345_2024-01-01..2024-01-31")
    run.add_argument("--table", choices=("events", "persons"), default="events")
    run.add_argument("--dry-run", action="store_true", help="log what would happen; write nothing")
    run.add_argument("--clickhouse-settings", metavar="JSON", help='e.g. \'{"max_execution_time": 7200}\'')
    run.add_argument("--skip-schema-validation", action="store_true")
    run.add_argument("--no-create-tables", action="store_true", help="a missing lake table is an error")
    run.add_argument("--delete-tables", action="store_true", help="DANGER: drop and recreate the table (every day)")
    run.add_argument("--skip-registration", action="store_true", help="export to S3 only")
    run.add_argument("--no-cleanup", action="store_true", help="keep the day's existing rows (re-runs add duplicates)")
    run.add_argument("--full-export", action="store_true", help="persons: all of the team's current persons")
    run.add_argument("--yes", action="store_true", help="confirm --delete-tables without asking")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true", help="run it here with dag.test() instead of triggering")
    mode.add_argument("--wait", action="store_true", help="after triggering, follow the run until it ends")
    run.add_argument("--timeout", type=_seconds(0, 7 * 24 * 3600), default=0, metavar="SECONDS", help="with --wait: give up after this long")
    run.add_argument("--poll-interval", type=_seconds(0.01, 3600), default=5, metavar="SECONDS", help=argparse.SUPPRESS)
    _json_option(run)
    run.set_defaults(handler="run:run")

    discover = commands.add_parser(
        "discover", help="find where teams' history starts in ClickHouse now, without a scheduler", epilog=_EPILOG,
        description="What duckling_discover_start_dates does every 15 minutes, run here: for each team without a "
                    "start date (or each TEAM given, again), the first day with events in ClickHouse, and for persons "
                    "the last closed day; remembered in the state file the DAG file reads (earlier dates win). "
                    "Teams with a start_date in the registry are left alone.")
    discover.add_argument("teams", nargs="*", metavar="TEAM", help="only these teams, even if already discovered "
                          "(default: every team not discovered yet)")
    _registry_option(discover)
    _json_option(discover)
    discover.set_defaults(handler="discover:run")
    return parser


@contextmanager
def _quiet_logs(verbose: bool) -> Iterator[None]:
    """Keep library INFO lines (connections retrieved, tasks started) out of the tables unless ``-v``.

    Airflow fixes its log level when it is first imported, so in a fresh process (the console script) the
    level is set through its own setting just for this command; warnings and errors always show.
    """
    if verbose:
        yield
        return
    saved_env = os.environ.get(_LEVEL_VAR)
    if "airflow" not in sys.modules:
        os.environ[_LEVEL_VAR] = "WARNING"
    root = logging.getLogger()
    saved_level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(saved_level)
        if saved_env is None:
            os.environ.pop(_LEVEL_VAR, None)
        else:
            os.environ[_LEVEL_VAR] = saved_env


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``duckling`` command; returns its exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else USAGE
    handler = getattr(args, "handler", None)
    if not handler:
        getattr(args, "parser", parser).print_help(sys.stderr)
        return USAGE
    err = make_console(stderr=True)
    module, function = handler.split(":")
    # With --json, stdout carries the JSON document alone: anything else that would print there (a library's
    # log line, dag.test()'s output) goes to stderr for the command's duration.
    as_json = bool(getattr(args, "json", False))
    out = make_console(file=sys.stdout) if as_json else make_console()
    with _quiet_logs(args.verbose), contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        try:
            command = getattr(importlib.import_module(f"airflow_provider_duckling.cli.{module}"), function)
            guard_logging()  # no task's secrets masker runs here: mask what any library logs
            return command(args, out)
        except KeyboardInterrupt:
            err.print("interrupted")
            return 130
        except Exception as exc:  # noqa: BLE001 - every failure ends as one scrubbed line and an exit code
            return _report_error(exc, err)


def _report_error(exc: Exception, err: Console) -> int:
    """Input mistakes exit 2; anything else (unreachable dependency, failed start) exits 1. Never a secret."""
    from airflow_provider_duckling.common.errors import PartitionError, RegistryError
    from airflow_provider_duckling.common.redaction import scrub

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, UsageError | PartitionError | RegistryError):
        err.print(f"duckling: error: {scrub(text)}")
        return USAGE
    prefix = "" if isinstance(exc, RunNotStarted) else f"{type(exc).__name__}: "
    err.print(f"duckling: {prefix}{scrub(text)}")
    return PROBLEMS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
