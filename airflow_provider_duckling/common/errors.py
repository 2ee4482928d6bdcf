"""The project's own exception types: each names what the user got wrong, never a secret."""


class DucklingError(Exception):
    """Base class: a problem this provider detected and explained.

    Subclasses are permanent (the same input fails the same way: retrying is pointless) unless they
    derive from :class:`TransientError`.
    """


class TransientError(DucklingError):
    """A dependency is unreachable or busy: a retry may succeed."""


class LakeUnavailableError(TransientError):
    """The duckling's catalog could not be attached (PostgreSQL down, network, credentials expired)."""


class RegistryError(DucklingError):
    """The duckling registry is unreadable, or an entry in it is invalid."""


class UnknownDucklingError(RegistryError):
    """No registry entry exists for the requested team."""


class PartitionError(DucklingError):
    """A partition key, team id or day is malformed or out of range."""


class ConfigurationError(DucklingError):
    """A connection, option or ClickHouse setting is missing or invalid."""


class CatalogVersionError(ConfigurationError):
    """The duckling's catalog is of another DuckLake format than this provider's DuckDB writes (a customer's
    newer DuckDB upgraded it, or an older one made it). Not retried: it stays so until someone acts."""


class SchemaDriftError(DucklingError):
    """The lake table's schema cannot accept what the export writes."""


class RegistrationError(DucklingError):
    """Registering exported files into the lake was refused (e.g. a file registered before)."""


class QueryTimeoutError(DucklingError):
    """ClickHouse ran out of time for a statement (``TIMEOUT_EXCEEDED``, or no answer within the client's
    read timeout while the statement was still running). Not retried: the same statement would run as long
    again; the message says which limit to raise."""


QUOTE_LIMIT = 40
"""At most this many characters of an offending value appear in a message (then ``…``)."""


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """A short, one-line, secret-free rendering of an offending value for an error message.

    Text is cut to ``limit`` characters *after* registered secrets are masked, and shown with ``repr`` so that
    newlines and control characters appear escaped; a huge integer is described, never printed (printing a
    5,000-digit int raises); anything else is named by its type. Every message about user input uses this, so
    a 100 kB key never becomes a 100 kB log line."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | bytearray):
        value = bytes(value[: limit * 4]).decode("utf-8", "replace")
    if isinstance(value, str):
        from airflow_provider_duckling.common.redaction import scrub

        # Mask secrets in a window wide enough to hold any secret that starts inside the shown prefix.
        text = scrub(value[: limit + 4096])
        shown = repr(text[:limit])
        return f"{shown}…" if len(text) > limit or len(value) > limit + 4096 else shown
    return f"a {type(value).__name__}"
