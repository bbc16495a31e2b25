"""One exception root, a few children that carry context."""


class TidingsError(Exception):
    """Root of every error Tidings raises on purpose."""


class ConfigError(TidingsError):
    """The configuration is wrong; the message names the file, key and reason."""

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__("\n".join(f"{where}{p}" for p in problems))


class QueryError(TidingsError):
    """A stream query could not be parsed; `position` points at the culprit."""

    def __init__(self, message: str, position: int) -> None:
        self.reason = message  # without the position, for editors that point at it
        self.position = position
        super().__init__(f"{message} (at character {position + 1})")


class ConnectorError(TidingsError):
    """A source could not be polled. The message is shown to admins as is."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class FetchError(ConnectorError):
    """An HTTP or file fetch failed (network, status, size, timeout)."""


class GoneError(FetchError):
    """The source answered 410 Gone: it is disabled until an admin re-enables it."""


class ParseError(ConnectorError):
    """The fetched document could not be understood."""


class AccountError(TidingsError):
    """A change to users, groups or tokens was refused; the message says why.

    `field` names the form field at fault, when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


def first_line(err: BaseException) -> str:
    """An error's first line of text, or its type's name when it has none:
    driver errors run to several lines of context nobody asked for."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def driver_error(err: BaseException) -> BaseException:
    """The database driver's own error inside one SQLAlchemy wrapped (whose
    text adds the SQL statement and a link), else `err` itself."""
    orig = getattr(err, "orig", None)
    return orig if isinstance(orig, BaseException) else err


def blot(text: str, secret: str | None) -> str:
    """`text` with `secret` replaced by ***. For a store's password in driver
    messages: libpq names host and port, never the password, and this keeps
    it so should that ever change."""
    return text.replace(secret, "***") if secret else text
