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


class SchemaDriftError(DucklingError):
    """The lake table's schema cannot accept what the export writes."""


class RegistrationError(DucklingError):
    """Registering exported files into the lake was refused (e.g. a file registered before)."""
