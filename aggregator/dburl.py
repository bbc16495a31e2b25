"""A store URL's secret, kept apart from the rest of it.

A password may sit in the URL's user part or, as libpq also accepts, in its
query (`?password=`). Whatever shows a URL to people (check-config, backup,
logs) or hands it to another program's command line (pg_dump, visible in
`ps`) uses `without_password`; the password itself goes only where it must
(the PGPASSWORD environment variable) or into `blot`.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url


def password_of(url: URL) -> str | None:
    """The password, from the user part or the query."""
    if url.password:
        return str(url.password)
    found = url.query.get("password")
    return found if isinstance(found, str) and found else None


def without_password(url: URL) -> URL:
    """`url` with no password anywhere in it."""
    # Made anew: URL.set() takes password=None as "leave it as it is".
    bare = URL.create(
        url.drivername, url.username, None, url.host, url.port, url.database, url.query
    )
    return bare.difference_update_query(["password"])


def shown(url: URL | str) -> str:
    """The URL as people may see it: `***` where a password was."""
    parsed = make_url(url)
    bare = without_password(parsed)
    if password_of(parsed) is not None:
        bare = bare.set(password="hidden")  # noqa: S106 - a placeholder, rendered as ***
    return bare.render_as_string(hide_password=True)


def libpq_url(url: URL | str) -> str:
    """The SQLAlchemy URL as libpq takes it (no `+psycopg` driver part)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
