"""``q3agent eval bfcl``'s note on how to start a server for a YaRN window."""

from __future__ import annotations

import json

from q3agent.cli.eval import _server_yarn_note
from q3agent.eval.bfcl_runner import EvalConfig
from q3agent.serving.sglang_runtime import RemoteSGLangRuntime, SGLangRuntime


def test_the_server_note_gives_the_override_the_embedded_engine_starts_with() -> None:
    """The flags the note tells a user to start SGLang with are the ones SGLangRuntime uses
    (checked on the real engine by tests/engine/sglang/test_context_limits.py): the YaRN
    ``rope_scaling`` and ``max_position_embeddings`` raised to the window, without which
    SGLang 0.5 refuses the longer ``--context-length`` at start."""
    config = EvalConfig(categories=("multi_turn_base",), multi_turn_context_length=65_536)
    note = _server_yarn_note(config, RemoteSGLangRuntime("http://127.0.0.1:9"))
    assert note is not None
    assert "--context-length 65536 " in note
    sglang_flags = note.split("--json-model-override-args '", 1)[1]
    override = json.loads(sglang_flags.split("'", 1)[0])
    embedded = SGLangRuntime("Qwen3-8B", context_length=65_536, tp_size=1).engine_args()
    assert override == json.loads(embedded["json_model_override_args"])
    assert override["max_position_embeddings"] == 65_536
