"""An import-only stand-in for ``sgl_kernel``, so SGLang's own CPU engine starts without it.

Why it exists: SGLang 0.5.23 imports these names from ``sgl_kernel`` unconditionally when
``SGLANG_USE_CPU_ENGINE=1`` (KV-cache bookkeeping and the speculative-decoding helpers), but no
published ``sgl-kernel``/``sglang-kernel`` wheel carries the CPU op library (every wheel is a
CUDA build and there is no sdist). On a CPU without AMX (this CI machine) every layer takes
SGLang's own ``forward_native`` path, and none of these functions is called by a request. If
one ever is, it appends its name to the file named by ``$Q3AGENT_SGL_KERNEL_CALLS`` and raises:
the SGLang test tier fails at teardown when that file is not empty, so the shim can never
quietly stand in for a kernel that did run. Test infrastructure only (q3agent itself never
imports it); ``q3agent.testing.sglang_server`` puts this directory on the server's path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NoReturn

CALLS_ENV = "Q3AGENT_SGL_KERNEL_CALLS"

NAMES = (
    "assign_req_to_token_pool_cpu",
    "copy_all_layer_kv_cache_cpu",
    "assign_draft_cache_locs_contiguous_cpu",
    "assign_extend_cache_locs_cpu",
    "build_draft_decode_metadata_cpu",
    "build_tree_kernel_efficient_cpu",
    "fill_accept_out_cache_loc_cpu",
    "fill_bonus_tokens_cpu",
    "rotate_input_ids_cpu",
    "sgl_build_tree_kernel_efficient_cpu",
    "sgl_verify_tree_greedy_cpu",
    "verify_tree_greedy_cpu",
)


def _shimmed(name: str) -> Callable[..., NoReturn]:
    def call(*args: Any, **kwargs: Any) -> NoReturn:
        path = os.environ.get(CALLS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as log:
                log.write(name + "\n")
        raise RuntimeError(
            f"sgl_kernel.{name} was called, but this sgl_kernel is q3agent's import-only test "
            "shim (no CPU kernel library is published): the test setup must not reach it"
        )

    call.__name__ = call.__qualname__ = name
    return call


globals().update({name: _shimmed(name) for name in NAMES})
