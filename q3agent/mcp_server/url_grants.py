"""URL grants that cannot be walked around: URLs compared in one normal form, or refused.

``serve-mcp --allow-url http://host/docs/`` lets clients ingest pages under ``/docs/``. Web
servers decode and tidy the paths they receive (percent-decoding, ``..`` segments, case of
the host, default ports, and on some servers backslashes, ``;`` parameters, doubled slashes
or Unicode compatibility forms), so comparing the URL *as written* with the prefix lets
``/docs/%2e%2e/secret`` through. :func:`normalize_url` turns a URL into one normal form
(:class:`NormalURL`): scheme and host lower-cased, the host IDNA-encoded and numeric IPv4
spellings made dotted-quad, the default port made explicit, the path percent-decoded once
with its dot segments resolved. Anything whose meaning differs between servers is refused
with :class:`UnsafeURL` instead of guessed at: user info, backslashes, control characters,
encoded slashes, doubled encoding, malformed escapes or UTF-8, empty path segments, dot
segments with ``;`` parameters, and characters whose Unicode compatibility form is a dot,
slash or backslash. The URL that is then fetched is :meth:`NormalURL.url`, the normal form
itself, so the server receives exactly what was checked.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes, urlsplit

__all__ = ["NormalURL", "UnsafeURL", "normalize_url"]

DEFAULT_PORTS = {"http": 80, "https": 443}

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_NUMERIC_LABEL = re.compile(r"^(?:0[xX][0-9A-Fa-f]*|[0-9]+)$")
_HOST_CHARS = re.compile(r"^[a-z0-9_-]+$")
_PATH_SAFE = "/:@!$&'()*+,;=~-._"
"""Characters left unescaped in a normal path (RFC 3986 ``pchar`` and ``/``)."""


class UnsafeURL(ValueError):
    """A URL that cannot be put in one normal form; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class NormalURL:
    """A URL in normal form: what a grant is compared on and what is fetched."""

    scheme: str
    host: str
    """Lower-case ASCII (IDNA) name, dotted-quad IPv4, or compressed IPv6 without brackets."""
    port: int
    path: str
    """Decoded, dot segments resolved; starts with ``/``."""
    query: str = ""
    """As written (the grant does not look at it)."""

    @property
    def url(self) -> str:
        """The normal form as a URL (path re-encoded, default port left out)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}{port}{quote(self.path, safe=_PATH_SAFE)}{query}"

    def within(self, prefix: NormalURL) -> bool:
        """Whether this URL lies under ``prefix``: same origin, path equal or below it."""
        if (self.scheme, self.host, self.port) != (prefix.scheme, prefix.host, prefix.port):
            return False
        base = prefix.path
        return self.path == base or self.path.startswith(base if base.endswith("/") else base + "/")


def normalize_url(url: str) -> NormalURL:
    """The normal form of an http(s) URL; :class:`UnsafeURL` when it has none (see module)."""
    text = url.strip()
    for char in text:
        if char.isspace() or unicodedata.category(char) == "Cc":
            raise UnsafeURL(f"{url!r}: contains whitespace or a control character")
    if "\\" in text:
        raise UnsafeURL(f"{url!r}: contains a backslash, which servers read differently")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"{url!r}: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeURL(f"{url!r}: not an http(s) URL")
    if "@" in parts.netloc:
        raise UnsafeURL(f"{url!r}: user info (user@host) is not accepted")
    host = _normal_host(parts.hostname or "", url)
    return NormalURL(
        scheme=scheme,
        host=host,
        port=port if port is not None else DEFAULT_PORTS[scheme],
        path=_normal_path(parts.path or "/", url),
        query=parts.query,
    )


def _normal_host(host: str, url: str) -> str:
    if not host:
        raise UnsafeURL(f"{url!r}: no host")
    if "%" in host:
        raise UnsafeURL(f"{url!r}: percent-escapes in the host")
    if ":" in host:  # urlsplit gives IPv6 literals without their brackets
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise UnsafeURL(f"{url!r}: {host!r} is not an IPv6 address") from None
    for char in host:  # full-width dots and the like become ASCII dots under UTS 46
        if unicodedata.normalize("NFKC", char) == ".":
            host = host.replace(char, ".")
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):  # an IPv4 address in any of its spellings
        try:
            return socket.inet_ntoa(socket.inet_aton(name))
        except OSError:
            raise UnsafeURL(f"{url!r}: {host!r} is not a valid IPv4 address") from None
    try:
        import idna

        ascii_name = idna.encode(name, uts46=True).decode("ascii")
    except (ImportError, UnicodeError, ValueError):
        try:
            ascii_name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise UnsafeURL(f"{url!r}: {host!r} is not a valid host name") from None
    ascii_name = ascii_name.lower()
    if not all(label and _HOST_CHARS.match(label) for label in ascii_name.split(".")):
        raise UnsafeURL(f"{url!r}: {host!r} is not a valid host name")
    return ascii_name


def _normal_path(raw: str, url: str) -> str:
    if not raw.startswith("/"):
        raise UnsafeURL(f"{url!r}: the path must start with '/'")
    if _BAD_ESCAPE.search(raw):
        raise UnsafeURL(f"{url!r}: a '%' that is not followed by two hex digits")
    segments = raw.split("/")[1:]
    decoded: list[str] = []
    for i, segment in enumerate(segments):
        try:
            text = unquote_to_bytes(segment).decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeURL(f"{url!r}: percent-escapes that are not UTF-8") from None
        if "/" in text or "\\" in text:
            raise UnsafeURL(f"{url!r}: an encoded slash or backslash in the path")
        if any(unicodedata.category(c) == "Cc" for c in text):
            raise UnsafeURL(f"{url!r}: an encoded control character (NUL, newline ...)")
        if _ESCAPE.search(text):
            raise UnsafeURL(f"{url!r}: percent-escapes encoded twice (%25..)")
        if not text and i < len(segments) - 1:
            raise UnsafeURL(f"{url!r}: an empty path segment ('//')")
        bare = text.split(";", 1)[0]
        if bare in (".", "..") and bare != text:
            raise UnsafeURL(f"{url!r}: a dot segment with parameters ({text!r})")
        compat = unicodedata.normalize("NFKC", text)
        if compat != text and (
            any(c in compat for c in "/\\") or compat.split(";", 1)[0] in (".", "..")
        ):
            raise UnsafeURL(f"{url!r}: {text!r} reads as a dot segment or slash once normalised")
        decoded.append(text)
    return "/" + "/".join(_remove_dot_segments(decoded))


def _remove_dot_segments(segments: list[str]) -> list[str]:
    """RFC 3986 section 5.2.4 on decoded segments; climbing above the root stays at the root."""
    out: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return out
