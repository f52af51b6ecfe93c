"""Our exceptions. Each says whether trying again can help, so callers decide at the edge."""


class LoaderError(Exception):
    """Base of every error the loader raises on purpose."""

    transient = False


class TransientError(LoaderError):
    """Trying again later can succeed: a locked DuckDB file, a warehouse that refuses connections."""

    transient = True


class TerminalError(LoaderError):
    """Trying again cannot help until someone changes something: bad input, bad configuration."""


class ConfigError(TerminalError):
    """A setting or argument is wrong."""


class QueryError(TerminalError):
    """The warehouse could not run a `loader query`: bad SQL, a write on the read-only connection, or no
    connection. Says what the warehouse said."""


class SourceExistsError(TerminalError):
    """A source with that name, schema or write key is already registered."""


class UnknownSourceError(TerminalError):
    """No source has that name."""


class WarehouseBusy(TransientError):
    """The embedded warehouse file is held by another process (DuckDB allows one writer)."""
