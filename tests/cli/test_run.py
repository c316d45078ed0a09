"""``q3agent run`` as a user types it: tools from their folder, JSON output, servers, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.testing.http_server import ScriptedHTTPServer
from tests.cli.conftest import Cli

TOOLS = (
    "from q3agent import tool\n\n"
    "@tool\n"
    "def multiply(a: int, b: int) -> int:\n"
    '    """Multiply.\n\n    Args:\n        a: First.\n        b: Second.\n    """\n'
    "    return a * b\n"
)


def write_script(folder: Path) -> Path:
    call = json.dumps({"name": "multiply", "arguments": {"a": 17, "b": 23}})
    script = folder / "script.jsonl"
    script.write_text(
        json.dumps("<think>\nMultiply them.\n</think>\n\n<tool_call>\n" + call + "\n</tool_call>")
        + "\n"
        + json.dumps({"completion": "17 × 23 = 391."})
        + "\n"
    )
    return script


def test_run_imports_tools_from_the_current_directory(q3agent: Cli, tmp_path: Path) -> None:
    (tmp_path / "mytools.py").write_text(TOOLS)
    trace = tmp_path / "trace.jsonl"
    done = q3agent(
        "run", "What is 17*23?", "--script", str(write_script(tmp_path)),
        "--tools", "mytools:multiply", "--trace", str(trace), cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "step 0" in out and "planning the task" in out
    assert "Multiply them." in out  # reasoning shown
    assert "→ multiply" in out and "← 391" in out
    assert "17 × 23 = 391." in out
    assert "answer · 2 steps" in out
    assert [json.loads(line)["type"] for line in trace.read_text().splitlines()] == [
        "step",
        "step",
        "run",
    ]


def test_run_json_prints_only_json_on_stdout(q3agent: Cli, tmp_path: Path) -> None:
    (tmp_path / "mytools.py").write_text(TOOLS)
    done = q3agent(
        "run", "What is 17*23?", "--script", str(write_script(tmp_path)),
        "--tools", "mytools:multiply", "--json", cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # the whole of stdout parses
    assert result["answer"] == "17 × 23 = 391."
    assert "→ multiply" in done.stderr  # the steps are still shown, on stderr


def test_a_missing_tools_module_is_one_line_naming_the_folder(q3agent: Cli, tmp_path: Path) -> None:
    done = q3agent(
        "run", "hi", "--script", str(write_script(tmp_path)), "--tools", "nothere:f", cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "no module 'nothere'" in done.stderr and str(tmp_path) in done.stderr


def test_run_without_gpu_or_weights_says_what_to_do(q3agent: Cli, tmp_path: Path) -> None:
    done = q3agent("run", "hello", "--model", "Qwen3-30B-A3B", cwd=tmp_path)

    assert done.returncode == 2
    text = done.stderr
    assert "No runtime can serve 'Qwen3-30B-A3B'" in text and "Traceback" not in text
    assert "q3agent[sglang]" in text
    # CLI words first, the served name, and the download tool that is installed (hf)
    assert "--runtime openai --base-url http://HOST:PORT" in text
    assert "Q3AGENT_RUNTIME=openai" in text and "Q3AGENT_BASE_URL" in text
    assert "'Qwen/Qwen3-30B-A3B'" in text and "--served-model" in text
    assert "hf download Qwen/Qwen3-30B-A3B" in text and "huggingface-cli" not in text
    assert "--script" in text


def test_v_shows_the_traceback(q3agent: Cli, tmp_path: Path) -> None:
    done = q3agent("run", "hello", "-v", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" in done.stderr and "RuntimeUnavailableError" in done.stderr


def streamed(text: str) -> tuple[str, list[object]]:
    """A streamed completion as vLLM sends it with ``return_token_ids``: one token per chunk,
    then the stop (``<|im_end|>``: its id is returned, its text is not), usage, ``[DONE]``."""
    tokenizer = Qwen3Tokenizer.offline()
    pieces: list[object] = [
        {"choices": [{"index": 0, "text": tokenizer.decode([i]), "token_ids": [i],
                      "finish_reason": None}]}
        for i in tokenizer.encode_trusted(text)
    ]  # fmt: skip
    stop = {"index": 0, "text": "", "token_ids": [tokenizer.im_end_id], "finish_reason": "stop"}
    pieces.append({"choices": [{**stop, "stop_reason": tokenizer.im_end_id}]})
    pieces.append({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 3}})
    return ("sse", [*pieces, "[DONE]"])


@pytest.fixture
def server() -> object:
    with ScriptedHTTPServer() as running:
        yield running


def test_run_against_a_server_sends_the_served_name_and_limits(
    q3agent: Cli, server: ScriptedHTTPServer, tmp_path: Path
) -> None:
    server.script.append(streamed("Paris."))
    done = q3agent(
        "run", "Capital of France?", "--model", "Qwen3-4B-Instruct-2507",
        "--base-url", server.url, "--api-key", "sk-test", "--max-tokens", "64",
        "--prompt-format", "text", "--json", cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == "Paris."
    assert "Warning" not in done.stderr  # the double returns ids, as vLLM does
    path, headers, body = server.requests[0]
    assert path == "/v1/completions"
    assert body["model"] == "Qwen/Qwen3-4B-Instruct-2507"  # the registry's HF id on the wire
    assert headers["authorization"] == "Bearer sk-test"
    assert body["max_tokens"] == 64
    assert isinstance(body["prompt"], str)  # --prompt-format text
    # the registry model decides: an Instruct-2507 model gets no thinking switch
    assert "<think>" not in body["prompt"] and "(direct:" in done.stderr


def test_env_vars_mirror_the_flags_and_served_model_overrides(
    q3agent: Cli, server: ScriptedHTTPServer, tmp_path: Path
) -> None:
    server.script.append(streamed("Paris."))
    done = q3agent(
        "run", "Capital of France?", "--thinking", "off", "--json",
        env={
            "Q3AGENT_MODEL": "Qwen3-8B",
            "Q3AGENT_BASE_URL": server.url,
            "Q3AGENT_SERVED_MODEL": "my-qwen",
            "Q3AGENT_MAX_TOKENS": "32",
        },
        cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    body = server.requests[0][2]
    assert body["model"] == "my-qwen"
    assert body["max_tokens"] == 32
    assert body["prompt"] and isinstance(body["prompt"], list)  # ids by default


def test_unknown_model_lists_the_valid_ones_or_asks_for_capability(
    q3agent: Cli, tmp_path: Path
) -> None:
    done = q3agent("run", "hi", "--model", "Qwen3-9B", "--base-url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "Unknown Qwen3 model 'Qwen3-9B'" in done.stderr
    assert "Qwen3-8B" in done.stderr and "--capability" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_documents_the_flags_and_their_env_vars(q3agent: Cli) -> None:
    done = q3agent("run", "--help")
    for text in ("--runtime", "--base-url", "--api-key", "--served-model", "--max-tokens",
                 "--context-length", "--capability", "--prompt-format", "Q3AGENT_BASE_URL",
                 "Q3AGENT_RUNTIME", "Q3AGENT_API_KEY", "Q3AGENT_SERVED_MODEL"):  # fmt: skip
        assert text in done.stdout


def test_version(q3agent: Cli) -> None:
    from q3agent import __version__

    done = q3agent("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"q3agent {__version__}"


@pytest.mark.parametrize("bad", [["run"], ["nonsense"]])
def test_bad_usage_exits_with_argparse_error(q3agent: Cli, bad: list[str]) -> None:
    done = q3agent(*bad)
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_a_served_name_the_server_lacks_says_to_pass_served_model(
    q3agent: Cli, server: ScriptedHTTPServer, tmp_path: Path
) -> None:
    # what vLLM answers for a model name it does not serve
    error = {
        "error": {
            "message": "The model `Qwen/Qwen3-8B` does not exist. Valid aliases: my-qwen.",
            "type": "NotFoundError",
            "code": 404,
        }
    }
    server.script.append(("json", 404, error, {}))
    done = q3agent("run", "hi", "--model", "Qwen3-8B", "--base-url", server.url, cwd=tmp_path)
    assert done.returncode == 1
    text = done.stderr
    assert text.startswith("error: the run ended with status error: ") and text.count("\n") == 1
    assert "Valid aliases: my-qwen" in text and "--served-model" in text
    assert "Check the base URL" not in text


def test_an_answer_cut_at_max_tokens_is_said_on_the_cli_and_in_the_json(
    q3agent: Cli, tmp_path: Path
) -> None:
    script = tmp_path / "long.jsonl"
    script.write_text(json.dumps("Two plus two makes four, as anyone can count on fingers.") + "\n")
    done = q3agent(
        "run", "What is 2+2?", "--script", str(script), "--thinking", "off", "--max-tokens", "4",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert "warning: the answer was cut off at the completion-token limit" in done.stderr
    assert "raise --max-tokens" in done.stderr
    assert done.returncode == 1  # the answer is incomplete: a failure, said once as a warning
    assert "error:" not in done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "truncated"
    assert result["answer"]  # what the model wrote before the limit is kept
