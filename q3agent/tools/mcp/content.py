"""MCP tool results → what the model reads, what the user sees, and the media parts.

The rules (the MCP spec leaves rendering to the client):

* **Text once.** Text blocks are the result. ``structuredContent`` is used only when there is
  no text for the model: servers are asked to repeat it as text for older clients, so adding it
  again would double every result (a 50,001-character file became 100,019 characters).
* **Media as parts, never as base64 text.** Images and audio become :class:`MediaPart` objects
  on :class:`MCPToolOutput` (for a runtime or an application that can use them) and a short
  note for the model with their type, size and name. Long base64 strings inside structured
  content are replaced by such a note too.
* **Embedded text resources are included** (with their URI); binary ones become a note.
* **Audience.** Blocks annotated ``audience: ["user"]`` stay out of the prompt and are returned
  to the caller in :attr:`MCPToolOutput.for_user`; ``["assistant"]``-only blocks reach the model.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import mcp_types

__all__ = ["MCPToolOutput", "MediaPart", "convert_result", "render_mcp_result"]

_BASE64_RUN = re.compile(r"^[A-Za-z0-9+/=\s]{512,}$")


@dataclass(frozen=True)
class MediaPart:
    """An image or audio item (or a binary resource) a tool returned, decoded to bytes."""

    kind: Literal["image", "audio", "blob"]
    mime_type: str
    data: bytes
    name: str = ""
    """The resource URI or a name the server gave; ``""`` when it gave none."""

    def describe(self) -> str:
        """The one-line note the model reads in place of the data."""
        name = f" {self.name}" if self.name else ""
        return f"[{self.kind}{name}: {self.mime_type}, {_size(len(self.data))}; not shown as text]"


class MCPToolOutput(str):
    """One MCP tool result: the text the model reads (the string itself), plus what is not text.

    ``for_user`` holds the blocks annotated for the user only, ``media`` the decoded images,
    audio and binary resources, ``result`` the raw MCP result. Being a ``str``, it can be used
    wherever the tool's text is expected; the agent keeps it as ``ToolResult.output``.
    """

    media: list[MediaPart]
    for_user: list[Any]
    result: Any
    is_error: bool

    def __new__(
        cls,
        text: str,
        *,
        media: list[MediaPart] | None = None,
        for_user: list[Any] | None = None,
        result: Any = None,
        is_error: bool = False,
    ) -> MCPToolOutput:
        self = super().__new__(cls, text)
        self.media = list(media or [])
        self.for_user = list(for_user or [])
        self.result = result
        self.is_error = is_error
        return self

    @property
    def text(self) -> str:
        """What the model reads, as a plain ``str``."""
        return str.__str__(self)


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    return f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


def _decode(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return data.encode()


def _for_model(block: Any) -> bool:
    annotations = getattr(block, "annotations", None)
    audience = getattr(annotations, "audience", None) if annotations is not None else None
    return not audience or "assistant" in audience


def _strip_binary(value: Any) -> Any:
    """``value`` with long base64 strings replaced by a size note (for structured content)."""
    if isinstance(value, str) and len(value) >= 512 and _BASE64_RUN.match(value):
        return f"[binary data, {_size(len(value) * 3 // 4)}; not shown]"
    if isinstance(value, list):
        return [_strip_binary(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip_binary(v) for k, v in value.items()}
    return value


def _json_equal(text: str, value: Any) -> bool:
    try:
        return bool(json.loads(text) == value)
    except json.JSONDecodeError:
        return False


def convert_result(result: mcp_types.CallToolResult) -> MCPToolOutput:
    """Split an MCP result into the model's text, the user's blocks and the media parts."""
    texts: list[str] = []
    media: list[MediaPart] = []
    for_user: list[Any] = []
    for block in result.content:
        if not _for_model(block):
            for_user.append(block)
            continue
        kind = getattr(block, "type", None)
        if kind == "text":
            texts.append(block.text)  # type: ignore[union-attr]
        elif kind in ("image", "audio"):
            part = MediaPart(kind, block.mime_type, _decode(block.data))  # type: ignore[union-attr, arg-type]
            media.append(part)
            texts.append(part.describe())
        elif kind == "resource":
            res = block.resource  # type: ignore[union-attr]
            mime = res.mime_type or "unknown type"
            text = getattr(res, "text", None)
            if text is not None:
                texts.append(f"[resource {res.uri} ({mime})]\n{text.rstrip(chr(10))}")
            else:
                part = MediaPart(
                    "blob", mime, _decode(getattr(res, "blob", "") or ""), str(res.uri)
                )
                media.append(part)
                texts.append(part.describe())
        elif kind == "resource_link":
            label = block.title or block.name  # type: ignore[union-attr]
            mime = f", {block.mime_type}" if block.mime_type else ""  # type: ignore[union-attr]
            texts.append(f"[resource link: {block.uri} ({label}{mime})]")  # type: ignore[union-attr]
        else:
            texts.append(f"[{kind or 'unknown'} content returned by the tool; not shown]")
    structured = result.structured_content
    has_text = any(t.strip() for t in texts)
    if structured is not None and (
        not has_text or (len(texts) == 1 and _json_equal(texts[0], structured))
    ):
        texts = [json.dumps(_strip_binary(structured), ensure_ascii=False)]
    text = "\n".join(t for t in texts if t)
    if not text:
        text = (
            "(the tool returned content for the user only)"
            if for_user
            else "(the tool returned no content)"
        )
    return MCPToolOutput(
        text,
        is_error=bool(result.is_error),
        media=media,
        for_user=for_user,
        result=result,
    )


def render_mcp_result(result: mcp_types.CallToolResult) -> str:
    """The text the model sees for an MCP tool result (error or not); see :func:`convert_result`."""
    return convert_result(result).text
