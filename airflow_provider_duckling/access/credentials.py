"""Cross-account access: assume a duckling's role (with its external id) and get session credentials.

Airflow's own identity comes from an Amazon provider connection (``aws_default`` unless the DuckLake
connection names another); the assumed session credentials are what ClickHouse writes with and what the
DuckDB S3 secret holds. Every credential value is registered as a secret before it can reach a log.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from airflow_provider_duckling.common.errors import ConfigurationError, TransientError
from airflow_provider_duckling.common.log_guard import guard_logging
from airflow_provider_duckling.common.redaction import register_secret, scrub
from airflow_provider_duckling.registry.catalog import Duckling

# STS answers that the same request will always get again (anything else, e.g. throttling, is retried).
_PERMANENT_STS_ERRORS = {"AccessDenied", "ValidationError", "MalformedPolicyDocument", "RegionDisabledException",
                         "InvalidClientTokenId"}


@dataclass(frozen=True)
class S3Credentials:
    """Temporary credentials of an assumed duckling role."""

    key_id: str = field(repr=False)
    secret: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expiration: dt.datetime | None = None


def _refuse_foreign_connection(aws_conn_id: str) -> None:
    """The base identity's connection, when it exists, must be an AWS one: its login and password are sent to
    STS as keys. (A missing one means the environment's identity: IRSA, an instance profile.)"""
    from airflow.sdk import BaseHook

    from airflow_provider_duckling.access.connection_extras import require_type

    try:
        conn = BaseHook.get_connection(aws_conn_id)
    except Exception:
        return
    require_type(conn, aws_conn_id, "aws", "the DuckLake connection's aws_conn_id")


CHAINED_SESSION_LIMIT = 3600
"""AWS grants a role assumed with an assumed role's credentials (role chaining: IRSA, an instance profile, an
ECS task role, or an Airflow connection with its own role_arn) at most one hour, whatever the role's
MaxSessionDuration says."""


def _chaining_message(aws_conn_id: str, duration_seconds: int) -> str:
    return (
        f"[duckling] role_session_seconds is {duration_seconds} but {aws_conn_id!r}'s identity is itself an assumed role, "
        f"and AWS grants a chained role at most {CHAINED_SESSION_LIMIT} s: set role_session_seconds to {CHAINED_SESSION_LIMIT} "
        "or less, or let ClickHouse write with its own identity ([duckling] export_identity = clickhouse), "
        "whose exports do not depend on this session's length"
    )


def _refuse_chained_session_longer_than_allowed(sts: object, aws_conn_id: str, duration_seconds: int) -> None:
    """Refuse, before any write, a session length that role chaining cannot grant: STS would refuse it too,
    but only some providers say why. Costs one GetCallerIdentity, and only when the length is above an hour."""
    try:
        arn = str(sts.get_caller_identity().get("Arn", ""))  # type: ignore[attr-defined]
    except Exception:
        return  # AssumeRole itself will answer (and its refusal is mapped to the same message)
    if ":assumed-role/" in arn:
        raise ConfigurationError(_chaining_message(aws_conn_id, duration_seconds))


def assume_duckling_role(aws_conn_id: str, duckling: Duckling, duration_seconds: int | None = None) -> S3Credentials:
    """Assume ``duckling.cross_account_role_arn`` with its external id.

    :param aws_conn_id: Airflow AWS connection giving the base identity (and endpoint_url for MinIO/moto).
    :param duckling: the registry entry whose role to assume.
    :param duration_seconds: session length; defaults to ``[duckling] role_session_seconds``.
    """
    from airflow_provider_duckling.registry.settings import role_session_seconds

    duration_seconds = duration_seconds or role_session_seconds()
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    register_secret(duckling.cross_account_external_id)
    guard_logging()  # botocore would log the request (external id) and the answer (the session's secrets)
    _refuse_foreign_connection(aws_conn_id)
    try:
        sts = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="sts").get_conn()
    except Exception as exc:
        raise ConfigurationError(scrub(f"AWS connection {aws_conn_id!r} is unusable: {type(exc).__name__}: {exc}")) from None
    if duration_seconds > CHAINED_SESSION_LIMIT:
        _refuse_chained_session_longer_than_allowed(sts, aws_conn_id, duration_seconds)
    try:
        answer = sts.assume_role(
            RoleArn=duckling.cross_account_role_arn,
            RoleSessionName=f"duckling-team-{duckling.team_id}",
            ExternalId=duckling.cross_account_external_id,
            DurationSeconds=duration_seconds,
        )
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        if "role chaining" in str(exc).lower():
            raise ConfigurationError(_chaining_message(aws_conn_id, duration_seconds)) from None
        error = ConfigurationError if code in _PERMANENT_STS_ERRORS else TransientError
        raise error(
            f"cannot assume role {duckling.cross_account_role_arn} for team {duckling.team_id}: {code} "
            "(check the role's trust policy and the external id in the registry)"
        ) from None
    creds = answer["Credentials"]
    for value in (creds["AccessKeyId"], creds["SecretAccessKey"], creds.get("SessionToken")):
        register_secret(value)
    return S3Credentials(
        key_id=creds["AccessKeyId"],
        secret=creds["SecretAccessKey"],
        session_token=creds.get("SessionToken"),
        expiration=creds.get("Expiration"),
    )
