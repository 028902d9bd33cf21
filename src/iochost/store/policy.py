"""Source policy (issue 5): which git URLs and local paths a client may ask iochost to run.

Pure logic, no I/O. URLs are compared after parsing, never as raw strings: scheme and host
are case-insensitive, the host must match exactly (so `https://github.com@evil.com/` is
`evil.com`), default ports are dropped, and a prefix matches only at a path boundary (so
the prefix `https://github.com/my-org` does not admit `https://github.com/my-org.evil/`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from iochost.errors import ErrorCode, IochostError
from iochost.store.entries import PluginSource

DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git+ssh": 22, "ssh+git": 22, "git": 9418}
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^:/]+):(?P<path>.*)$")
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*):[^/\s@]*@")
LOCAL_HINT = "enable local sources with --allow-local-sources / IOCHOST_ALLOW_LOCAL_SOURCES=1"


@dataclass(frozen=True)
class RemoteUrl:
    """A git URL reduced to what a prefix is compared on."""

    scheme: str
    host: str
    port: int | None
    user: str | None
    path: str


def redact_url(text: str) -> str:
    """Replace a password embedded in any URL in `text` by `***`."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def has_credentials(url: str) -> bool:
    """True when `url` carries a password, or any user name on http(s) (a token in disguise)."""
    if "://" not in url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.password is not None:
        return True
    return parts.scheme.lower() in ("http", "https") and parts.username is not None


class InvalidSource(IochostError, ValueError):
    """A source that breaks a rule of ``check_one_source``: INVALID_REQUEST for the store and
    the API, and a ValueError, so a pydantic validator (``PluginRequest``) can raise it as is."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(ErrorCode.INVALID_REQUEST, message, **details)


def check_one_source(git_url: str | None, local_path: str | None) -> None:
    """Raise InvalidSource unless exactly one of ``git_url`` / ``local_path`` is given and
    ``git_url`` carries no credentials: a token inside the URL would reach the registry,
    events and logs; ``pat`` does not. The API's request model and the store's fetch both
    check a source here."""
    if (git_url is None) == (local_path is None):
        raise InvalidSource("give exactly one of git_url or local_path")
    if git_url is not None and has_credentials(git_url):
        raise InvalidSource("git_url must not carry credentials; pass the token as `pat`", field="git_url")


def is_local_url(url: str) -> bool:
    """`file://` URLs and plain paths: git reads them from this host's file system."""
    if "://" in url:
        return url.split("://", 1)[0].lower() == "file"
    return "::" not in url and _SCP_LIKE.match(url) is None


def parse_remote_url(url: str) -> RemoteUrl:
    """Parse a network git URL (`scheme://` or scp-like `user@host:path`); ValueError if not one."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in url):
        raise ValueError("contains control characters")
    if "://" in url:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"scheme {scheme!r} is not one of {', '.join(sorted(DEFAULT_PORTS))}")
        host = (parts.hostname or "").lower()
        port = parts.port
        user = parts.username
        path = parts.path
    elif "::" in url:
        raise ValueError("remote-helper transports (`<transport>::<address>`) are not allowed")
    else:
        match = _SCP_LIKE.match(url)
        if match is None:
            raise ValueError("not a network URL")
        scheme, host, port, user = "ssh", match["host"].lower(), None, match["user"]
        path = "/" + match["path"].lstrip("/")
    if not host:
        raise ValueError("has no host")
    if port == DEFAULT_PORTS[scheme]:
        port = None
    if scheme in ("git+ssh", "ssh+git"):
        scheme = "ssh"
    path = unquote(path)
    if ".." in path.split("/"):
        raise ValueError("path contains '..'")
    return RemoteUrl(scheme, host, port, user, path)


def prefix_matches(url: RemoteUrl, prefix: RemoteUrl) -> bool:
    """Same scheme, host, port (and user if the prefix names one); path under the prefix's."""
    if (url.scheme, url.host, url.port) != (prefix.scheme, prefix.host, prefix.port):
        return False
    if prefix.user is not None and url.user != prefix.user:
        return False
    base = prefix.path
    if base in ("", "/"):
        return True
    if base.endswith("/"):
        return url.path.startswith(base)
    return url.path in (base, base + ".git") or url.path.startswith(base + "/")


def validate_prefixes(prefixes: list[str]) -> None:
    """Raise ValueError naming the first prefix that is not a network git URL (for settings)."""
    for prefix in prefixes:
        try:
            parse_remote_url(prefix)
        except ValueError as exc:
            raise ValueError(f"allowed source prefix {prefix!r}: {exc}") from None


def check_source_allowed(source: PluginSource, allowed_prefixes: list[str], allow_local: bool) -> None:
    """Raise SOURCE_NOT_ALLOWED unless the policy admits `source`.

    `local_path` and local git URLs (`file://`, plain paths) need `allow_local` and are not
    subject to the prefix list. A network URL must be under one of `allowed_prefixes` when
    the list is non-empty; an unparsable prefix matches nothing.
    """
    if source.local_path is not None and not allow_local:
        raise IochostError(ErrorCode.SOURCE_NOT_ALLOWED,
                           f"local_path sources are disabled; {LOCAL_HINT}", field="local_path")
    url = source.git_url
    if url is None:
        return
    shown = redact_url(url)
    if is_local_url(url):
        if not allow_local:
            raise IochostError(ErrorCode.SOURCE_NOT_ALLOWED,
                               f"local git URL {shown!r} is disabled; {LOCAL_HINT}", field="git_url")
        return
    try:
        parsed = parse_remote_url(url)
    except ValueError as exc:
        raise IochostError(ErrorCode.SOURCE_NOT_ALLOWED, f"git_url {shown!r} is not allowed: {exc}",
                           field="git_url") from None
    if not allowed_prefixes:
        return
    for prefix in allowed_prefixes:
        try:
            if prefix_matches(parsed, parse_remote_url(prefix)):
                return
        except ValueError:
            continue
    raise IochostError(ErrorCode.SOURCE_NOT_ALLOWED,
                       f"git_url {shown!r} is not under an allowed source prefix "
                       f"({', '.join(redact_url(p) for p in allowed_prefixes)})", field="git_url")
