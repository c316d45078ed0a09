"""Read grants: the folders and URL prefixes that served tools (``rag_ingest``) may read.

The operator grants them with ``--allow-folder`` and ``--allow-url``; every path is resolved
and every URL (redirect hops included) put in normal form
(:mod:`q3agent.mcp_server.url_grants`) before it is compared, and anything outside is refused
with :class:`SourceRefused`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from q3agent.mcp_server.errors import ServeConfigError
from q3agent.mcp_server.url_grants import NormalURL, UnsafeURL, normalize_url

__all__ = ["ReadPolicy", "SourceRefused"]


class SourceRefused(ValueError):
    """A client asked a served tool to read a path or URL the operator did not allow."""


@dataclass(frozen=True)
class ReadPolicy:
    """The folders and URL prefixes served tools may read; nothing else is read.

    Paths are resolved (symlinks followed) before the check, so a link inside an allowed folder
    that points outside it is refused. URLs are compared in their normal form
    (:func:`~q3agent.mcp_server.url_grants.normalize_url`: decoded path with dot segments
    resolved, host and port normalised) on scheme, host, port and path prefix; a URL without
    one normal form is refused, the normal form is what gets fetched, and every redirect hop
    is checked too. An empty policy allows nothing.
    """

    folders: tuple[Path, ...] = ()
    url_prefixes: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, folders: Iterable[str | os.PathLike[str]] = (), urls: Iterable[str] = ()
    ) -> ReadPolicy:
        """Build from operator options; folders must exist, prefixes must be http(s) URLs."""
        resolved: list[Path] = []
        for folder in folders:
            path = Path(folder).expanduser().resolve()
            if not path.is_dir():
                raise ServeConfigError(
                    f"--allow-folder {folder}: no such folder; give an existing directory"
                )
            resolved.append(path)
        prefixes: list[str] = []
        for url in urls:
            try:
                normalize_url(url)
            except UnsafeURL as exc:
                raise ServeConfigError(
                    f"--allow-url {url!r} is not a usable http(s) URL prefix ({exc}); give "
                    "e.g. https://docs.example.com/"
                ) from None
            prefixes.append(url.strip())
        return cls(tuple(resolved), tuple(prefixes))

    @property
    def allows_anything(self) -> bool:
        """Whether any folder or URL prefix was granted."""
        return bool(self.folders or self.url_prefixes)

    def _inside(self, path: Path) -> bool:
        return any(path == f or path.is_relative_to(f) for f in self.folders)

    def check_url(self, url: str) -> NormalURL:
        """``url`` in normal form; :class:`SourceRefused` unless it lies under a prefix.

        A URL that has no single normal form (encoded slashes, doubled encoding, user info,
        backslashes ...) is refused with the reason.
        """
        granted = ", ".join(self.url_prefixes) or "none; start the server with --allow-url"
        try:
            normal = normalize_url(url)
        except UnsafeURL as exc:
            why = str(exc).split(": ", 1)[-1]
            raise SourceRefused(
                f"{url}: outside the URL prefixes this server may read ({granted}): {why}, "
                "which web servers read in different ways; write the URL plainly"
            ) from None
        for prefix in self.url_prefixes:
            if normal.within(normalize_url(prefix)):
                return normal
        raise SourceRefused(f"{url}: outside the URL prefixes this server may read ({granted})")

    def check_path(self, source: str) -> Path:
        """The resolved path; raise :class:`SourceRefused` unless it lies in an allowed folder.

        A relative path is taken relative to the first allowed folder. A path that cannot
        name a file (a NUL byte, a symlink loop) is refused with the reason.
        """
        if "\x00" in source:
            raise SourceRefused(
                f"{source!r}: a path cannot contain a NUL byte; give the file's plain path"
            )
        try:
            raw = Path(source).expanduser()
            if not raw.is_absolute() and self.folders:
                raw = self.folders[0] / raw
            path = raw.resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise SourceRefused(f"{source!r}: not a readable path ({exc})") from None
        if not self._inside(path):
            granted = (
                ", ".join(map(str, self.folders)) or "none; start the server with --allow-folder"
            )
            raise SourceRefused(f"{source}: outside the folders this server may read ({granted})")
        return path

    def expand(self, sources: Iterable[str]) -> tuple[list[str], list[str]]:
        """``(allowed files and URLs, refusals)``; folders become their files, each checked."""
        from q3agent.rag.ingest import is_url, walk_folder

        allowed: list[str] = []
        refused: list[str] = []
        for source in sources:
            try:
                if is_url(source.strip().lower()):
                    allowed.append(self.check_url(source).url)
                    continue
                path = self.check_path(source)
            except SourceRefused as exc:
                refused.append(str(exc))
                continue
            try:
                is_dir = path.is_dir()
            except OSError as exc:  # e.g. a name too long for the file system
                refused.append(f"{source!r}: not a readable path ({exc.strerror or exc})")
                continue
            if not is_dir:
                allowed.append(str(path))
                continue
            for file in walk_folder(path):
                real = file.resolve()
                if self._inside(real):
                    allowed.append(str(real))
                else:
                    refused.append(f"{file}: a link to {real}, outside the allowed folders")
        return allowed, refused

    def http_client(self) -> Any:
        """An httpx client that refuses any request (redirects included) outside the prefixes.

        A request that is let through is sent with its path in normal form, so the server
        reads the path that was checked.
        """
        import httpx

        def check(request: httpx.Request) -> None:
            try:
                normal = self.check_url(str(request.url))
            except SourceRefused as exc:
                raise httpx.RequestError(f"refused: {exc}", request=request) from None
            target = httpx.URL(normal.url)
            if target.raw_path != request.url.raw_path:
                request.url = request.url.copy_with(raw_path=target.raw_path)

        return httpx.Client(follow_redirects=True, timeout=30.0, event_hooks={"request": [check]})
