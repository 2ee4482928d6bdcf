"""Fuzzing (issue 13, point 5): the registry loader, the state loader and the partition key parser, fed
generated and mutated input, raise only the project's own errors (:class:`RegistryError`,
:class:`PartitionError`), with a one-line message of bounded length that never echoes a secret, within a
bounded time (Hypothesis' deadline) and memory (``tracemalloc``).

Bounded for CI: a fixed number of examples per target, ``derandomize=True`` so every run tries the same
inputs (a failure reproduces), no example database written."""

from __future__ import annotations

import datetime as dt
import json
import string
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from airflow_provider_duckling.common.errors import PartitionError, RegistryError  # noqa: E402
from airflow_provider_duckling.common.redaction import register_secret  # noqa: E402
from airflow_provider_duckling.domain.partitions import Partition, parse_day, validate_team_id  # noqa: E402
from airflow_provider_duckling.registry import state  # noqa: E402
from airflow_provider_duckling.registry.catalog import parse_registry_text  # noqa: E402

REGISTERED_SECRET = "Zq9RegisteredSecretMarker"  # registered, as the CLI and hooks register real secrets
FIELD_SECRET = "Xk7UnregisteredFieldSecret"  # only ever the value of a secret field: never quoted at all
MAX_MESSAGE = 300
MAX_PEAK_BYTES = 64 * 1024 * 1024
FUZZ = settings(max_examples=250, deadline=800, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GOOD = {
    "team_id": 12345, "bucket": "acme-duckling", "bucket_region": "us-east-1", "db_host": "catalog.example.internal",
    "db_name": "ducklake", "cross_account_role_arn": "arn:aws:iam::111122223333:role/duckling-writer",
    "cross_account_external_id": "posthog-12345",
}

register_secret(REGISTERED_SECRET)


def only_own_errors(call: Callable[[], object], *allowed: type[Exception]) -> None:
    """Run ``call``: it returns, or raises one of ``allowed`` with a short, secret-free, one-line message;
    its peak memory stays bounded."""
    tracemalloc.start()
    try:
        call()
    except allowed as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message[:MAX_MESSAGE]
        assert len(message) <= MAX_MESSAGE, message[:MAX_MESSAGE]
        assert REGISTERED_SECRET not in message and FIELD_SECRET not in message, message
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MAX_PEAK_BYTES, peak


# Values a field may take: the right type and shape, near misses, and hostile text.
hostile_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=string.printable, max_size=60),
    st.sampled_from(["７", "١٢٣", "12345\n", " 12345", "acme-duckling\n", "us-east-1\x00", "2024-01-01\n",
                     "２024-01-01", "1_000", "nan", "-0", "9" * 5000, "x" * 20_000, "\ufeff", "Catalog.Example.Internal",
                     REGISTERED_SECRET, f"pre{REGISTERED_SECRET}post", "*alias", "&anchor", "!!python/name:os.system"]),
)
dumpable = st.one_of(
    hostile_text, st.integers(), st.integers(min_value=-(10**40), max_value=10**40), st.floats(), st.booleans(),
    st.none(), st.dates(),
)
scalar = dumpable | st.just(10**5000)  # an int too long to print: only for values never dumped to text
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=20)


@st.composite
def registry_entries(draw: st.DrawFn) -> dict[object, object]:
    entry: dict[object, object] = dict(GOOD)
    for name in draw(st.lists(st.sampled_from([*GOOD, "db_port", "start_date", "catalog_conn_id"]), max_size=3)):
        entry[name] = draw(dumpable)
    if draw(st.booleans()):
        entry["cross_account_external_id"] = FIELD_SECRET
    if draw(st.booleans()):
        entry[draw(st.sampled_from(["password", "db_password", "secret"]))] = FIELD_SECRET
    if draw(st.booleans()):
        entry.pop(draw(st.sampled_from(list(GOOD))), None)
    return entry


@st.composite
def registry_texts(draw: st.DrawFn) -> str:
    """A registry document (YAML or JSON form), sometimes cut, spliced or extended with hostile YAML."""
    entries = draw(st.lists(registry_entries(), max_size=4))
    doc = {"ducklings": entries}
    dumper = draw(st.sampled_from(["yaml", "json"]))
    if dumper == "json":
        text = json.dumps(doc, default=str)
    else:
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()))
    mutation = draw(st.sampled_from(["none", "cut", "splice", "append", "prepend"]))
    if mutation == "cut" and text:
        text = text[: draw(st.integers(0, len(text)))]
    elif mutation == "splice" and text:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=10)) + text[at + draw(st.integers(0, 5)):]
    elif mutation in ("append", "prepend"):
        extra = draw(st.sampled_from([
            "ducklings: []\n", "---\nducklings: []\n", "a: &a [1, 2]\nb: *a\n", "x: !!binary 'not base64'\n",
            "x: !!timestamp 2024-13-45\n", "x: " + "[" * 2000 + "\n", "x: !custom 1\n", "x: 0x" + "f" * 100 + "\n",
            "x: 2024-02-30\n", "x: {<<: {k: 1}}\n", "x: " + "9" * 5000 + "\n", "? [a, b]\n: 1\n", "x: .nan\n", "\ttab: 1\n", "x: \x00\n",
        ]))
        text = text + extra if mutation == "append" else extra + text
    return text


@FUZZ
@given(registry_texts())
def test_registry_loader_raises_only_registry_errors(text):
    only_own_errors(lambda: parse_registry_text(text, Path("ducklings.yaml")), RegistryError)


@FUZZ
@given(st.text(max_size=300))
def test_registry_loader_on_arbitrary_text(text):
    only_own_errors(lambda: parse_registry_text(text, Path("ducklings.yaml")), RegistryError)


@FUZZ
@given(st.binary(max_size=300))
def test_registry_and_state_files_of_arbitrary_bytes(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    registry, dates, last_good = folder / "r.yaml", folder / "dates.json", folder / "last_good.json"
    for path in (registry, dates, last_good):
        path.write_bytes(data)
    only_own_errors(lambda: state.load_start_dates(dates), RegistryError)
    inputs = state.load_dag_inputs(registry, dates, last_good)  # never raises: problems are reported
    for problem in inputs.problems:
        assert "\n" not in problem and len(problem) <= MAX_MESSAGE


@st.composite
def state_texts(draw: st.DrawFn) -> str:
    days = draw(st.dictionaries(
        st.one_of(st.integers(min_value=-5, max_value=2**64).map(str), hostile_text),
        st.one_of(st.dates(min_value=dt.date(1900, 1, 1)).map(dt.date.isoformat), hostile_text, json_values),
        max_size=4))
    tables = draw(st.dictionaries(st.one_of(st.sampled_from(["events", "persons"]), hostile_text),
                                  st.one_of(st.just(days), json_values), max_size=3))
    doc: object = draw(st.sampled_from([{"start_dates": tables}, tables, {"start_dates": draw(json_values)}]))
    text = json.dumps(doc)
    if draw(st.booleans()) and text:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", "NaN", "1e999", "9" * 5000, '"a": 1, "a": 2', "[" * 5000, "\\ud800"]))\
            + text[at:]
    return text


@FUZZ
@given(state_texts())
def test_state_loader_raises_only_registry_errors(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("state") / "dates.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # a lone surrogate is an undecodable file
    only_own_errors(lambda: state.load_start_dates(path), RegistryError)


key_text = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[0-9]{1,20}_[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True),
    st.builds(lambda team, day, noise: f"{team}_{day}{noise}", st.integers(-5, 2**64), st.dates(),
              st.sampled_from(["", "\n", " ", "\x00", "７", REGISTERED_SECRET])),
    st.builds(lambda a, b: a + REGISTERED_SECRET + b, st.text(max_size=50), st.text(max_size=50)),
    st.just("9" * 5000 + "_2024-01-01"), st.just("x" * 100_000),
)


@FUZZ
@given(key_text)
def test_partition_key_parser_raises_only_partition_errors(key):
    only_own_errors(lambda: Partition.parse(key), PartitionError)
    only_own_errors(lambda: parse_day(key), PartitionError)


@FUZZ
@given(st.one_of(scalar, key_text, json_values))
def test_team_id_validation_raises_only_partition_errors(value):
    only_own_errors(lambda: validate_team_id(value), PartitionError)
    only_own_errors(lambda: Partition.parse(value), PartitionError)  # type: ignore[arg-type]
