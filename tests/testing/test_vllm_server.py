"""The scripted-token logits processor's logic (the part that runs without vLLM) and the
server command line; tests/engine runs them inside a real vLLM server."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from q3agent.qwen3.thinking import EARLY_STOP_TEXT
from q3agent.qwen3.tokenizer import Qwen3Tokenizer
from q3agent.testing import vllm_server
from q3agent.testing.vllm_server import FREE_TURN, forced_token, script_body, server_command

TOK = Qwen3Tokenizer.offline()
QUERY = "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n"
THINKING = '<think>\nLet me add.\n</think>\n\n<tool_call>\n{"name": "add"}\n</tool_call><|im_end|>'
ANSWER = "It is 5.<|im_end|>"


def _script(*turns: str) -> list[int]:
    return script_body([TOK.encode_trusted(t) for t in turns])["vllm_xargs"]["q3agent_script"]


def _generate(prompt: str, script: list[int], limit: int = 200) -> str:
    """Greedy 'generation' from the forced tokens alone, until <|im_end|> or ``limit``."""
    prompt_ids, out = TOK.encode_trusted(prompt), []
    while len(out) < limit:
        token = forced_token(prompt_ids, out, script)
        assert token is not None
        out.append(token)
        if token == TOK.im_end_id:
            break
    return TOK.decode(out)


def test_qwen3_ids_match_the_tokenizer() -> None:
    assert TOK.im_start_id == vllm_server.IM_START_ID
    assert TOK.im_end_id == vllm_server.IM_END_ID
    assert TOK.think_end_id == vllm_server.THINK_END_ID
    assert TOK.encode_trusted("<|im_start|>assistant\n")[1] == vllm_server.ASSISTANT_ID
    assert {TOK.encode_trusted(s)[0] for s in ("\n", "\n\n", "\n\n\n")} == set(
        vllm_server.NEWLINE_IDS
    )


def test_a_thinking_turn_is_written_in_full() -> None:
    assert _generate(QUERY, _script(THINKING)) == THINKING


def test_a_budget_continuation_resumes_at_the_answer() -> None:
    cut = "<think>\nLet me"
    continued = QUERY + cut + EARLY_STOP_TEXT
    assert EARLY_STOP_TEXT.endswith("</think>\n\n")
    assert _generate(continued, _script(THINKING)) == THINKING.split("</think>\n\n")[1]


def test_a_non_thinking_prompt_gets_the_answer_part() -> None:
    prompt = QUERY + "<think>\n\n</think>\n\n"
    assert _generate(prompt, _script(THINKING)) == THINKING.split("</think>\n\n")[1]
    assert _generate(prompt, _script(ANSWER)) == ANSWER


def test_the_turn_is_found_by_counting_assistant_headers() -> None:
    second = (
        QUERY + "It is 5.<|im_end|>\n<|im_start|>user\nAgain.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert _generate(second, _script(ANSWER, "Still 5.<|im_end|>")) == "Still 5.<|im_end|>"
    # a turn past the script ends at once instead of letting the random model ramble
    assert _generate(second, _script(ANSWER)) == "<|im_end|>"
    assert forced_token(TOK.encode_trusted("no chat here"), [], _script(ANSWER)) is None


def test_a_free_turn_is_left_to_the_model_and_the_script_goes_on_after_it() -> None:
    script = script_body([TOK.encode_trusted(ANSWER), FREE_TURN, TOK.encode_trusted(ANSWER)])
    flat = script["vllm_xargs"]["q3agent_script"]
    first = TOK.encode_trusted(QUERY)
    assert forced_token(first, [], flat) == TOK.encode_trusted(ANSWER)[0]
    second = [*first, *TOK.encode_trusted(ANSWER + "\n<|im_start|>user\nAgain.<|im_end|>\n")]
    second += TOK.encode_trusted("<|im_start|>assistant\n")
    # the model's own turn: nothing forced, whatever it has written so far
    assert forced_token(second, [], flat) is None
    assert forced_token(second, TOK.encode("Five, I think."), flat) is None
    third = [*second, *TOK.encode_trusted("Five.<|im_end|>\n<|im_start|>user\nOnce more.")]
    third += TOK.encode_trusted("<|im_end|>\n<|im_start|>assistant\n")
    assert _generate(TOK.decode(third), flat) == ANSWER


def test_plain_text_that_spells_a_header_is_not_a_turn() -> None:
    prompt_ids = [*TOK.encode_trusted(QUERY), *TOK.encode("<|im_start|>assistant\n")]
    script = _script(ANSWER, "Wrong turn.<|im_end|>")
    # still the first turn (whose answer the spelled text already overran), not "Wrong turn."
    assert forced_token(prompt_ids, [], script) == TOK.im_end_id


def test_the_server_command_loads_the_processor_and_reports_cached_tokens() -> None:
    command = server_command(Path("/models/tiny"), 18099, served_model_name="tiny")
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    for flag in ("--enable-prefix-caching", "--enable-prompt-tokens-details", "--enforce-eager"):
        assert flag in command
    assert command[command.index("--logits-processors") + 1].endswith(":ScriptedTokens")
    assert command[command.index("--max-model-len") + 1] == "40960"


def test_a_missing_engine_venv_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("Q3AGENT_ENGINE_VENV", "/nonexistent/engine-venv")
    reason = vllm_server.engine_missing_reason()
    assert reason is not None and ".ci/engines.sh" in reason


def test_stop_removes_the_temporary_work_folder_even_when_never_started(tmp_path: Path) -> None:
    server = vllm_server.VLLMServer(tmp_path, port=1, log_path=tmp_path / "vllm.log")
    workdir = server._workdir
    assert workdir.is_dir()
    server.stop()
    assert not workdir.exists()


FLAKY_SERVER = """
import http.server, sys, threading, time
class Health(http.server.BaseHTTPRequestHandler):
    answered = 0
    def do_GET(self):
        Health.answered += 1
        if Health.answered > 1:
            time.sleep(1.5)  # slower than the health timeout, as under load
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Health)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("serving", flush=True)
time.sleep(2)
sys.exit(3)
"""


class _FlakyServer(vllm_server.ServerProcess):
    """A stand-in engine: /health answers once at once, then slower than the timeout; the
    process exits with code 3 after 2 s."""

    engine_name = "flaky"
    health_timeout = 0.5

    def __init__(self, tmp_path: Path, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = tmp_path / "flaky.log"
        self._process = None
        self._port = port

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-c", FLAKY_SERVER, str(self._port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def test_serve_outlives_a_slow_health_check_and_reports_the_servers_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The long-lived server (``python -m q3agent.testing.sglang_server``) used to stop at
    the first ``/health`` slower than its timeout and exit 0; now only the server's own exit
    ends it, with exit 1 and the log's tail."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    started = time.monotonic()
    try:
        assert _FlakyServer(tmp_path, port).serve() == 1
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert time.monotonic() - started >= 2  # it served on past the slow health checks
    err = capsys.readouterr().err
    assert "flaky exited with code 3" in err and "serving" in err


def test_a_server_class_must_say_how_it_starts() -> None:
    with pytest.raises(TypeError, match="start"):
        vllm_server.ServerProcess()  # type: ignore[abstract]
