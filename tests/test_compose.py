"""The docker-compose stack, checked without a Docker engine.

What can be checked here is checked for real: the file parses (and ``docker compose config`` accepts it
where a compose client is installed); every service, port, volume, file and variable the Airflow side needs
is declared and consistent across services; the connections parse with the hooks' own code and point at
the services that exist, with the credentials those services are given; the registry the stack mounts is
valid and every duckling's bucket and catalog are created; the ClickHouse init SQL (the package's own file)
and the seeding service's command run on the real ClickHouse engine (chdb); the PostgreSQL init SQL runs on
a real PostgreSQL and the catalog user it creates can use every catalog database.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from airflow_provider_duckling.demo.sample_data import SOURCE_DATABASE, rows_for
from airflow_provider_duckling.registry.catalog import parse_registry

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "docker" / "airflow.Dockerfile"

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-init")
SEED_SERVICE = "duckling-sample-data"
REQUIRED_SERVICES = {"clickhouse", "minio", "minio-init", "postgres", "redis", SEED_SERVICE, *AIRFLOW_SERVICES}
# [celery] options the stack sets that only the celery provider declares (as Airflow's own compose file does).
CELERY_PROVIDER_OPTIONS = {"result_backend"}
CONNECTIONS = ("AIRFLOW_CONN_CLICKHOUSE_DEFAULT", "AIRFLOW_CONN_DUCKLAKE_DEFAULT", "AIRFLOW_CONN_AWS_DEFAULT")

# ${NAME}, ${NAME:-default}, ${NAME-default}, and $$ (a literal $), as compose interpolates them.
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def interpolate(value):
    """The compose file's values as ``docker compose`` renders them with no overrides: every default."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: "$" if m.group(0) == "$$" else (m.group("default") or ""), value)
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    return value


RAW = COMPOSE_FILE.read_text()
COMPOSE = interpolate(yaml.safe_load(RAW))
SERVICES: dict = COMPOSE["services"]


def env_of(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts(service: str) -> list[tuple[str, str]]:
    """``(source, target)`` of each short-syntax volume of a service."""
    out = []
    for volume in SERVICES[service].get("volumes") or []:
        source, target = volume.split(":")[:2]
        out.append((source, target))
    return out


def host_path(service: str, container_path: str) -> Path:
    """The repository file that a bind mount of ``service`` shows at ``container_path``."""
    for source, target in mounts(service):
        if source.startswith("./") and container_path == target:
            return REPO / source
        if source.startswith("./") and container_path.startswith(target + "/"):
            return REPO / source / os.path.relpath(container_path, target)
    raise AssertionError(f"{service}: nothing from the repository is mounted at {container_path}")


def container_ports(service: str) -> set[int]:
    """Ports a service listens on inside the compose network (published targets and ``expose``)."""
    ports = {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in SERVICES[service].get("ports") or []}
    return ports | {int(p) for p in SERVICES[service].get("expose") or []}


def connection(name: str) -> dict:
    return json.loads(env_of("airflow-scheduler")[name])


def registry() -> dict:
    path = host_path("airflow-scheduler", env_of("airflow-scheduler")["AIRFLOW__DUCKLING__REGISTRY_PATH"])
    return parse_registry(yaml.safe_load(path.read_text()), source=path.name)


# ---------------------------------------------------------------- the file and its services


def test_the_stack_declares_every_service_and_airflow_is_celery_shaped():
    assert REQUIRED_SERVICES <= set(SERVICES), f"missing services: {REQUIRED_SERVICES - set(SERVICES)}"
    image = SERVICES["airflow-scheduler"]["image"]
    for name in (*AIRFLOW_SERVICES, SEED_SERVICE):
        service = SERVICES[name]
        assert service["image"] == image, f"{name} runs another image"
        assert service["build"]["dockerfile"] == "docker/airflow.Dockerfile"
        assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    commands = {name: SERVICES[name].get("command") for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    assert commands["airflow-worker"] == "celery worker"
    init = " ".join(commands["airflow-init"])
    assert env_of("airflow-init")["_AIRFLOW_DB_MIGRATE"] == "true"
    # The provider's one-time setup: the pool every export task runs in (settings.export_pool()).
    from airflow_provider_duckling.registry.settings import export_pool

    assert f'/entrypoint airflow pools set {export_pool()} "8"' in init
    assert env_of("airflow-init")["_AIRFLOW_WWW_USER_CREATE"] == "true"
    # The UI on 8080; workers scale out: no fixed container name, no host port.
    assert any(str(p).endswith(":8080") for p in SERVICES["airflow-apiserver"]["ports"])
    worker = SERVICES["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_every_variable_has_one_sample_default():
    """``docker compose up`` needs no .env; a variable used twice has the same default everywhere."""
    defaults: dict[str, set[str]] = {}
    for match in _VARIABLE.finditer(RAW):
        if match.group(0) == "$$":
            continue
        assert match.group("op") == ":-", f"${{{match.group('name')}}} has no default"
        defaults.setdefault(match.group("name"), set()).add(match.group("default"))
    assert defaults, "no variables found"
    drifted = {name: values for name, values in defaults.items() if len(values) > 1}
    assert not drifted, f"one variable, several defaults: {drifted}"


def test_depends_on_waits_for_health_and_for_the_one_shot_setup():
    for name, service in SERVICES.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target} to be healthy; it has no healthcheck"
            elif condition == "service_completed_successfully":
                assert SERVICES[target].get("restart") in (None, "no"), f"one-shot {target} must not restart"
            else:
                assert condition == "service_started", condition
    for name in (*AIRFLOW_SERVICES, SEED_SERVICE):
        deps = SERVICES[name]["depends_on"]
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy"
        if name != "airflow-init" and name != SEED_SERVICE:
            assert deps["airflow-init"]["condition"] == "service_completed_successfully"
    # Nothing exports before the buckets and the sample data exist.
    for name in ("airflow-scheduler", "airflow-worker"):
        deps = SERVICES[name]["depends_on"]
        assert deps["minio-init"]["condition"] == deps[SEED_SERVICE]["condition"] == "service_completed_successfully"
    assert SERVICES[SEED_SERVICE]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert SERVICES["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_named_volumes_are_declared_and_bind_mounts_exist():
    declared = set(COMPOSE.get("volumes") or {})
    used = set()
    for name in SERVICES:
        for source, target in mounts(name):
            assert target.startswith("/"), f"{name}: {target}"
            if source.startswith(("./", "../", "/")):
                assert not source.startswith(("/", "../")), f"{name} mounts {source} from outside the repository"
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in declared, f"{name} uses volume {source}, not declared at the top level"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"
    # What the Airflow components share: logs, and the remembered start dates.
    for name in AIRFLOW_SERVICES:
        targets = dict((t, s) for s, t in mounts(name))
        assert targets["/opt/airflow/logs"] == "airflow-logs"
        state_dir = str(Path(env_of(name)["AIRFLOW__DUCKLING__STATE_PATH"]).parent)
        assert targets[state_dir] == "duckling-state"


def _dockerignore_keeps(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes; a directory match covers its files."""
    kept = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) or
               (pattern.startswith("**/") and fnmatch.fnmatchcase(parts[-1], pattern[3:])) for prefix in prefixes):
            kept = negate
    return kept


def test_the_image_copies_only_files_the_repository_has():
    text = DOCKERFILE.read_text()
    ignore = [line.strip() for line in (DOCKERFILE.parent / (DOCKERFILE.name + ".dockerignore")).read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    copies = [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("COPY ")]
    assert copies
    sources = [arg for args in copies for arg in args[:-1] if not arg.startswith("--")]
    for source in sources:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
        assert _dockerignore_keeps(ignore, source), f"{source} is left out of the build context"
    assert not _dockerignore_keeps(ignore, ".venv") and not _dockerignore_keeps(ignore, ".git")
    # setup.cfg reads the README: the build needs it.
    assert "README.md" in sources and "file: README.md" in (REPO / "setup.cfg").read_text()
    # The base image is the Airflow release of the pinned set the image installs (constraints.txt).
    assert "constraints.txt" in sources
    pinned = re.search(r"^apache-airflow==([\d.]+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    default_base = re.search(r"ARG AIRFLOW_IMAGE=(\S+)", text).group(1)
    assert default_base.startswith(f"apache/airflow:{pinned}-")
    assert SERVICES["airflow-scheduler"]["build"]["args"]["AIRFLOW_IMAGE"] == default_base


def test_the_package_ships_its_schema_sql():
    """The image installs the package with ``pip install .``: the schema SQL must be package data, or the
    seeding service (and the image build's own check) finds no schema."""
    setup_cfg = (REPO / "setup.cfg").read_text()
    manifest = (REPO / "MANIFEST.in").read_text() if (REPO / "MANIFEST.in").exists() else ""
    package_data = re.search(r"\[options\.package_data\]\s*\n((?:[ \t]*\S.*\n?)*)", setup_cfg)
    declared = bool(package_data and re.search(r"sql/\*\.sql|sql/clickhouse_schema\.sql", package_data.group(1)))
    assert declared or re.search(r"(include|recursive-include)\s+airflow_provider_duckling.*sql", manifest), (
        "airflow_provider_duckling/sql/*.sql is not package data: add to setup.cfg\n"
        "[options.package_data]\nairflow_provider_duckling = sql/*.sql"
    )


# ---------------------------------------------------------------- what Airflow is told


def test_every_airflow_service_gets_the_same_configuration():
    reference = env_of("airflow-scheduler")
    for name in (*AIRFLOW_SERVICES, SEED_SERVICE):
        env = env_of(name)
        for key, value in reference.items():
            assert env.get(key) == value, f"{name}: {key} differs from the scheduler's"
        assert SERVICES[name]["user"] == SERVICES["airflow-scheduler"]["user"] or name == "airflow-init"
    env = reference
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    # Broker and result backend, metadata DB: the declared services, with the credentials they are given.
    broker = urlparse(env["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.scheme == "redis" and broker.hostname == "redis" and broker.port in container_ports("redis")
    pg = env_of("postgres")
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        url = urlparse(env[key])
        assert url.hostname == "postgres" and url.port in container_ports("postgres"), key
        assert (url.username, url.password, url.path.lstrip("/")) == (
            pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]), key
    # Workers reach the api-server's Execution API; all components share the token-signing secret.
    api = urlparse(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api.hostname == "airflow-apiserver" and api.path == "/execution/"
    assert api.port in container_ports("airflow-apiserver")
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 32 and env["AIRFLOW__API__SECRET_KEY"]
    # The registry is a mounted file; the remembered start dates live on a shared volume.
    for name in (*AIRFLOW_SERVICES, SEED_SERVICE):
        assert host_path(name, env["AIRFLOW__DUCKLING__REGISTRY_PATH"]).is_file()
    for conn in CONNECTIONS:
        assert conn in env


def test_every_airflow_setting_names_a_real_option():
    """A misspelt ``AIRFLOW__SECTION__KEY`` is silently ignored by Airflow: each must be a known option."""
    from airflow.configuration import conf

    described = conf.configuration_description
    settings_src = (REPO / "airflow_provider_duckling" / "registry" / "settings.py").read_text()
    duckling_keys = set(re.findall(r'_(?:get|int)\("(\w+)"', settings_src))
    assert {"registry_path", "state_path"} <= duckling_keys
    for name in (*AIRFLOW_SERVICES, SEED_SERVICE):
        for key in env_of(name):
            if not key.startswith("AIRFLOW__"):
                continue
            section, option = (part.lower() for part in key[len("AIRFLOW__"):].split("__", 1))
            if section == "duckling":
                assert option in duckling_keys, f"{key}: the provider has no such setting"
            elif section == "celery" and importlib.util.find_spec("airflow.providers.celery") is None:
                # The celery provider (in Airflow's image, not in this venv) defines the rest of [celery].
                assert option in described["celery"]["options"] or option in CELERY_PROVIDER_OPTIONS, key
            else:
                assert option in described.get(section, {}).get("options", {}), f"{key}: Airflow has no such option"


def test_connections_parse_with_the_hooks_and_point_at_the_services(monkeypatch):
    env = env_of("airflow-scheduler")
    for name in CONNECTIONS:
        monkeypatch.setenv(name, env[name])

    from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper
    from airflow.sdk import BaseHook

    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook

    # ClickHouse: host/port/login/password/schema, as ClickHouseHook reads them.
    clickhouse = BaseHook.get_connection("clickhouse_default")
    server = env_of("clickhouse")
    assert clickhouse.conn_type == "clickhouse"
    assert clickhouse.host == "clickhouse" and clickhouse.port in container_ports("clickhouse")
    assert (clickhouse.login, clickhouse.password) == (server["CLICKHOUSE_USER"], server["CLICKHOUSE_PASSWORD"])
    assert clickhouse.schema == SOURCE_DATABASE

    # DuckLake: the hook's own reading of the connection (login, port, aws_conn_id, s3_endpoint_url, sslmode).
    lake = DuckLakeHook().settings()
    pg = env_of("postgres")
    assert (lake.login, lake.password) == (pg["DUCKLING_CATALOG_USER"], pg["DUCKLING_CATALOG_PASSWORD"])
    assert lake.host == "postgres" and lake.port in container_ports("postgres")
    assert lake.local_root is None and lake.sslmode == "disable"
    endpoint = urlparse(lake.s3_endpoint_url)
    assert endpoint.hostname == "minio" and endpoint.port in container_ports("minio")
    assert f"AIRFLOW_CONN_{lake.aws_conn_id.upper()}" in env

    # AWS: the Amazon provider's reading (keys, endpoint_url, region) = the MinIO user minio-init creates.
    aws = AwsConnectionWrapper(BaseHook.get_connection(lake.aws_conn_id))
    init = env_of("minio-init")
    assert (aws.aws_access_key_id, aws.aws_secret_access_key) == (
        init["DUCKLING_AWS_ACCESS_KEY_ID"], init["DUCKLING_AWS_SECRET_ACCESS_KEY"])
    assert aws.endpoint_url == lake.s3_endpoint_url
    assert (init["MINIO_ROOT_USER"], init["MINIO_ROOT_PASSWORD"]) == (
        env_of("minio")["MINIO_ROOT_USER"], env_of("minio")["MINIO_ROOT_PASSWORD"])
    assert aws.aws_access_key_id != init["MINIO_ROOT_USER"], "MinIO refuses AssumeRole to its root user"
    assert len(aws.aws_secret_access_key) >= 8 and len(init["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO's minimum
    assert {d.bucket_region for d in registry().values()} == {aws.region_name}


# ---------------------------------------------------------------- the ducklings: registry, buckets, catalogs


def test_the_registry_is_valid_and_every_bucket_and_catalog_is_created():
    ducklings = registry()
    assert len(ducklings) >= 2
    script_path = host_path("minio-init", SERVICES["minio-init"]["entrypoint"][-1])
    script = script_path.read_text()
    loop = re.search(r"for bucket in ([^;]+);", script)
    created_buckets = set(loop.group(1).split())
    assert re.search(r'mc mb --ignore-existing "duckling/\$bucket"', script)
    policy_path = host_path("minio-init", re.search(r"duckling-writer (/\S+\.json)", script).group(1))
    resources_allowed = {r for s in json.loads(policy_path.read_text())["Statement"] if s["Effect"] == "Allow"
                         for r in s["Resource"]}
    pg_sql = host_path("postgres", "/docker-entrypoint-initdb.d/10-duckling-catalogs.sql").read_text()
    created_dbs = set(re.findall(r'CREATE DATABASE (\w+) OWNER :"catalog_user";', pg_sql))
    today = dt.datetime.now(dt.UTC).date()
    for team, duckling in ducklings.items():
        assert duckling.bucket in created_buckets, f"team {team}: bucket {duckling.bucket} is not created"
        assert {f"arn:aws:s3:::{duckling.bucket}", f"arn:aws:s3:::{duckling.bucket}/*"} <= resources_allowed
        assert duckling.db_host == "postgres" and (duckling.db_port or 5432) in container_ports("postgres")
        assert duckling.db_name in created_dbs, f"team {team}: catalog {duckling.db_name} is not created"
        assert f"AIRFLOW_CONN_{duckling.catalog_conn_id.upper()}" in env_of("airflow-worker")
        # A start date in the past: the team's DAGs catch up from it as soon as they are parsed.
        assert duckling.start_date is not None and duckling.start_date < today
    assert created_buckets == {d.bucket for d in ducklings.values()}
    assert created_dbs == {d.db_name for d in ducklings.values()}


def test_the_minio_init_script_is_valid_shell_and_gets_its_variables():
    script = host_path("minio-init", SERVICES["minio-init"]["entrypoint"][-1])
    subprocess.run(["sh", "-n", str(script)], check=True)
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", script.read_text()))
    assert used and used <= set(env_of("minio-init")), f"not given to minio-init: {used - set(env_of('minio-init'))}"


def test_the_postgres_init_sql_creates_usable_catalogs():
    """Run the init file the way the postgres image does (psql -f, as POSTGRES_USER, in POSTGRES_DB, with the
    service's environment) on a real PostgreSQL; then the ducklake_default login must own every catalog."""
    import psycopg2

    from tests.support.services import PG_BIN, start_postgres

    pg_env = env_of("postgres")
    sql_file = host_path("postgres", "/docker-entrypoint-initdb.d/10-duckling-catalogs.sql")
    # PostgreSQL runs as an unprivileged user: its directory must be reachable by it (pytest's tmp is not).
    root = Path(tempfile.mkdtemp(prefix="duckling-compose-pg-"))
    os.chmod(root, 0o755)
    server = start_postgres(root / "pg", pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"])
    try:
        server.psql(f'CREATE DATABASE "{pg_env["POSTGRES_DB"]}"')
        result = subprocess.run(
            [str(PG_BIN / "psql"), "-v", "ON_ERROR_STOP=1", "--username", pg_env["POSTGRES_USER"], "--no-password",
             "--no-psqlrc", "--host", "127.0.0.1", "--port", str(server.port), "--dbname", pg_env["POSTGRES_DB"],
             "-f", str(sql_file)],
            env={**os.environ, **pg_env, "PGPASSWORD": pg_env["POSTGRES_PASSWORD"]},
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        lake = json.loads(env_of("airflow-worker")["AIRFLOW_CONN_DUCKLAKE_DEFAULT"])
        for duckling in registry().values():
            conn = psycopg2.connect(host="127.0.0.1", port=server.port, user=lake["login"], password=lake["password"],
                                    dbname=duckling.db_name)
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
                    assert cur.fetchone()[0] == lake["login"]
                    # What DuckLake does on first attach: create its metadata tables in the catalog.
                    cur.execute("CREATE TABLE ducklake_probe (id INT)")
                    cur.execute("DROP TABLE ducklake_probe")
            finally:
                conn.close()
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- ClickHouse: schema and sample data


def _chdb(path: Path, script: str) -> str:
    """Run ``script`` (Python using a chdb session ``s`` on ``path``) in its own process: one data path per process."""
    code = f"from chdb import session\ns = session.Session({str(path)!r})\n{script}\ns.close()\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_clickhouse_init_is_the_package_schema_and_the_seeding_service_fills_it(tmp_path):
    # The init file mounted into the server is the package's own schema file, not a copy.
    init_targets = [t for _, t in mounts("clickhouse") if t.startswith("/docker-entrypoint-initdb.d/")]
    assert len(init_targets) == 1 and init_targets[0].endswith(".sql")
    init_file = host_path("clickhouse", init_targets[0])
    package_sql = resources.files("airflow_provider_duckling").joinpath("sql/clickhouse_schema.sql")
    assert init_file.samefile(str(package_sql))

    # The server runs the file as one multi-statement script (clickhouse-client --multiquery): so does chdb.
    data = tmp_path / "chdb"
    tables = _chdb(data, f"s.query(open({str(init_file)!r}).read())\n"
                         f"print(s.query('SHOW TABLES FROM {SOURCE_DATABASE}', 'TabSeparated'))")
    assert set(tables.split()) == {"events", "person", "person_distinct_id2"}

    # The seeding service's own command, with the registry it mounts, against that engine; twice (restarts).
    command = SERVICES[SEED_SERVICE]["command"]
    assert command[:3] == ["python", "-m", "airflow_provider_duckling.demo.sample_data"]
    args = list(command[3:])
    registry_arg = args.index("--registry") + 1
    args[registry_arg] = str(host_path(SEED_SERVICE, args[registry_arg]))
    ducklings = registry()
    until = max(d.start_date for d in ducklings.values()) + dt.timedelta(days=1)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW_CONN_CLICKHOUSE_DEFAULT": json.dumps(
            {"conn_type": "clickhouse", "schema": SOURCE_DATABASE, "extra": {"chdb_path": str(data)}}),
    }
    outputs = []
    for _ in range(2):
        result = subprocess.run([sys.executable, "-m", "airflow_provider_duckling.demo.sample_data", *args,
                                 "--until", until.isoformat()], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(result.stdout)
    assert "added 0 team-days of events, 0 of persons" in outputs[1], outputs

    counts = _chdb(data, "\n".join([
        "print(s.query(\"SELECT team_id, toString(toDate(timestamp)), count() FROM posthog.events "
        "GROUP BY 1, 2 ORDER BY 1, 2\", 'JSONCompact'))",
        "print(s.query(\"SELECT team_id, uniqExact(id), min(toDate(_timestamp)) FROM posthog.person GROUP BY 1 "
        "ORDER BY 1\", 'JSONCompact'))",
    ]))
    events_doc, persons_doc = _split_json_docs(counts)
    events = {(int(t), d): int(n) for t, d, n in events_doc["data"]}
    expected = {}
    for team, duckling in ducklings.items():
        day, index = duckling.start_date, 0
        while day <= until:
            expected[(team, day.isoformat())] = rows_for(team, index)
            day, index = day + dt.timedelta(days=1), index + 1
    assert events == expected
    persons = {int(t): int(n) for t, n, _ in persons_doc["data"]}
    seeded_days = {team: min(7, (until - d.start_date).days + 1) for team, d in ducklings.items()}
    assert persons == {team: 5 * days for team, days in seeded_days.items()}


def _split_json_docs(text: str) -> list[dict]:
    """Consecutive JSON documents printed one after another."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    text = text.strip()
    while at < len(text):
        doc, end = decoder.raw_decode(text, at)
        docs.append(doc)
        at = end
        while at < len(text) and text[at].isspace():
            at += 1
    return docs


# ---------------------------------------------------------------- a compose client, where there is one


def _compose_client() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_the_file():
    client = _compose_client()
    if client is None:
        pytest.skip("no compose client here (neither `docker compose` nor `docker-compose`); the other tests "
                    "check the file without one")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DUCKLING_", "AIRFLOW_"))}
    result = subprocess.run([*client, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    listed = subprocess.run([*client, "-f", str(COMPOSE_FILE), "config", "--services"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == set(SERVICES)
