"""The ``q3agent mcp tools|call`` and ``q3agent serve-mcp`` subcommands."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import anyio

from q3agent.cli.exits import FAILURE, INTERRUPTED, OK, USAGE
from q3agent.cli.options import add_runtime_options

if TYPE_CHECKING:
    from q3agent.mcp_server import ServedAgent
    from q3agent.tools.mcp import MCPServer


def add_mcp_commands(subparsers: Any) -> None:
    """Add ``mcp tools``, ``mcp call`` and ``serve-mcp`` to the ``q3agent`` parser."""
    _add_mcp_client_commands(subparsers)
    _add_serve_mcp_command(subparsers)


def _add_mcp_client_commands(subparsers: Any) -> None:
    """``mcp tools`` (list a server's tools) and ``mcp call`` (call one tool)."""
    mcp = subparsers.add_parser("mcp", help="list and call the tools of MCP servers")
    mcp_sub = mcp.add_subparsers(dest="mcp_command", required=True)

    def source_options(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--config", help='an {"mcpServers": {...}} JSON file')
        group.add_argument(
            "--stdio", metavar="COMMAND", help='a stdio server command line, e.g. "mcp-server-time"'
        )
        p.add_argument(
            "--timeout", type=float, default=60.0, help="seconds per tool call (default 60)"
        )

    tools = mcp_sub.add_parser(
        "tools", help="list tools with their JSON schemas (as the model will see them)"
    )
    source_options(tools)
    tools.add_argument("--server", metavar="NAME", help="only this server of the config")
    tools.add_argument("--json", action="store_true", help="print the tool schemas as JSON")
    tools.set_defaults(func=_cmd_tools)

    call = mcp_sub.add_parser("call", help="call one tool: q3agent mcp call SERVER.TOOL '{...}'")
    call.add_argument("tool", help="SERVER.TOOL (the server's name, a dot, the tool's MCP name)")
    call.add_argument(
        "arguments", nargs="?", default="{}", help="the arguments as a JSON object (default {})"
    )
    source_options(call)
    call.add_argument("--json", action="store_true", help="print the raw MCP result as JSON")
    call.set_defaults(func=_cmd_call)


def _add_serve_mcp_command(subparsers: Any) -> None:
    """``serve-mcp``: its transport, agent, store and grant options."""
    serve = subparsers.add_parser(
        "serve-mcp",
        help="serve a q3agent agent over MCP (tools: ask, rag_search, rag_ingest, research)",
        description=textwrap.dedent(
            """\
            Serve a q3agent agent as an MCP server. Tools: `ask` (run the agent, answer with
            sources, progress notifications per step); with --store, `rag_search`, and
            `rag_ingest` for the folders and URLs --allow-folder/--allow-url grant; with
            --research, `research`. Streamable HTTP binds to 127.0.0.1 unless --host says
            otherwise, and any other address requires --token (or Q3AGENT_MCP_TOKEN)."""
        ),
    )
    _add_transport_options(serve)
    _add_served_agent_options(serve)
    _add_store_options(serve)
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="another Host header value HTTP clients may use (needed for 0.0.0.0 binds)",
    )
    serve.add_argument(
        "--max-task-tokens",
        type=int,
        default=16_000,
        help="longest `ask` task in tokens (default 16000)",
    )
    serve.add_argument("--system", metavar="TEXT", help="system prompt of the default agent")
    serve.add_argument(
        "--max-steps", type=int, default=20, metavar="N", help="model steps per task (default 20)"
    )
    serve.add_argument("--name", default="q3agent", help="MCP server name (default q3agent)")
    serve.set_defaults(func=_cmd_serve)


def _add_transport_options(serve: argparse.ArgumentParser) -> None:
    """``--transport``, and where and how HTTP listens: ``--host``, ``--port``, ``--path``,
    ``--token``."""
    serve.add_argument(
        "--transport",
        choices=("stdio", "streamable-http"),
        default="stdio",
        help="stdio (default; the client starts the server) or streamable-http",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind for HTTP (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=8000, help="port for HTTP; 0 picks a free one (default 8000)"
    )
    serve.add_argument("--path", default="/mcp", help="HTTP endpoint path (default /mcp)")
    serve.add_argument(
        "--token", help="bearer token HTTP clients must send (default: $Q3AGENT_MCP_TOKEN)"
    )


def _add_served_agent_options(serve: argparse.ArgumentParser) -> None:
    """What agent ``ask`` runs: ``--agent``, or the runtime flags, ``--script`` and
    ``--mcp-config`` of the default agent."""
    serve.add_argument(
        "--agent", metavar="MODULE:FACTORY", help="a function returning an Agent (instead of "
        "--model and the runtime flags)"
    )  # fmt: skip
    add_runtime_options(serve)
    _add_renamed(
        serve,
        "--script",
        "--runtime-script",
        dest="runtime_script",
        metavar="JSONL",
        help="answer from scripted completions instead of a model (demos, tests)",
    )
    serve.add_argument("--mcp-config", metavar="FILE", help="MCP servers the served agent may use")


def _add_renamed(
    parser: argparse.ArgumentParser, flag: str, old_flag: str, *, dest: str, metavar: str, help: str
) -> None:
    """Add ``flag``, and its former spelling ``old_flag`` as a hidden alias of the same ``dest``."""
    parser.add_argument(flag, dest=dest, metavar=metavar, help=help)
    parser.add_argument(old_flag, dest=dest, help=argparse.SUPPRESS)


def _add_store_options(serve: argparse.ArgumentParser) -> None:
    """The RAG store (``--store``/``--chroma-url``), ``--research``, and what ``rag_ingest``
    may read (``--allow-folder``/``--allow-url``)."""
    _add_renamed(
        serve,
        "--store",
        "--rag-store",
        dest="rag_store",
        metavar="DIR",
        help="an existing RAG store directory (made with `q3agent rag ingest`); enables "
        "rag_search, and rag_ingest with --allow-folder/--allow-url",
    )
    _add_renamed(
        serve,
        "--chroma-url",
        "--rag-url",
        dest="rag_url",
        metavar="URL",
        help="a Chroma server instead of --store (`chroma run --path DIR --port 8000`)",
    )
    serve.add_argument(
        "--research", action="store_true", help="also serve `research` (deep-research reports)"
    )
    serve.add_argument(
        "--allow-folder",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder rag_ingest may read (repeatable); without any, rag_ingest is not served",
    )
    serve.add_argument(
        "--allow-url",
        action="append",
        default=[],
        metavar="PREFIX",
        help="a URL prefix rag_ingest may fetch, e.g. https://docs.example.com/ (repeatable)",
    )


def _servers(args: argparse.Namespace) -> list[MCPServer]:
    from q3agent.tools.mcp import MCPServerStdio, load_mcp_config

    if args.stdio:
        return [MCPServerStdio.from_command_line(args.stdio, timeout=args.timeout)]
    servers = load_mcp_config(args.config)
    for server in servers:
        server.timeout = args.timeout
    return servers


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return USAGE


def _cmd_tools(args: argparse.Namespace) -> int:
    from q3agent.tools.mcp import MCPServerError

    try:
        servers = _servers(args)
    except MCPServerError as exc:
        return _error(str(exc))
    if args.server:
        servers = [s for s in servers if s.name == args.server]
        if not servers:
            return _error(f"no server named {args.server!r} in {args.config}")

    async def main() -> list[tuple[MCPServer, list[dict[str, Any]]]]:
        listed = []
        for server in servers:
            async with server:
                listed.append((server, [t.schema() for t in await server.list_tools()]))
        return listed

    try:
        listed = anyio.run(main)
    except MCPServerError as exc:
        return _error(str(exc))
    if args.json:
        print(json.dumps([s for _, schemas in listed for s in schemas], indent=2))
        return OK
    for server, schemas in listed:
        print(f"{server.name} ({server.describe()}): {len(schemas)} tool(s)")
        for schema in schemas:
            fn = schema["function"]
            print(f"\n  {fn['name']}")
            for line in textwrap.wrap(fn.get("description") or "(no description)", 92):
                print(f"    {line}")
            params = json.dumps(fn["parameters"], indent=2, ensure_ascii=False)
            print(textwrap.indent(params, "    "))
        print()
    return OK


def _cmd_call(args: argparse.Namespace) -> int:
    from q3agent.tools.base import ToolError
    from q3agent.tools.mcp import MCPServerError, render_mcp_result

    try:
        arguments = json.loads(args.arguments)
    except json.JSONDecodeError as exc:
        example = '{"timezone": "UTC"}'
        return _error(f"the arguments are not JSON ({exc}); quote them, e.g. '{example}'")
    if not isinstance(arguments, dict):
        return _error('the arguments must be a JSON object, e.g. \'{"timezone": "UTC"}\'')
    try:
        servers = _servers(args)
    except MCPServerError as exc:
        return _error(str(exc))
    server_name, dot, tool_name = args.tool.partition(".")
    if args.stdio:
        server = servers[0]
        if not dot or server_name != server.name:
            tool_name = args.tool  # a bare tool name, or one that contains dots itself
    else:
        if not dot:
            return _error(f"name the tool as SERVER.TOOL, e.g. {servers[0].name}.TOOL")
        matches = [s for s in servers if s.name == server_name]
        if not matches:
            names = ", ".join(s.name for s in servers)
            return _error(f"no server named {server_name!r} in {args.config} (servers: {names})")
        server = matches[0]

    async def main() -> Any:
        async with server:
            return await server.call_tool(tool_name, arguments)

    try:
        result = anyio.run(main)
    except (MCPServerError, ToolError) as exc:
        return _error(str(exc))
    if args.json:
        print(result.model_dump_json(by_alias=True, exclude_none=True, indent=2))
    else:
        print(render_mcp_result(result))
    return FAILURE if result.is_error else OK


def _serve_runtime(args: argparse.Namespace) -> tuple[Any, Any]:
    """(runtime or None, capability) for the default agent; says at once when no model runs.

    Without a usable model the server still starts (``rag_search``/``rag_ingest`` work), and
    the reason is printed now rather than on the first ``ask``.
    """
    from q3agent.cli.options import resolve_model_choice
    from q3agent.serving.base import RuntimeUnavailableError

    choice = resolve_model_choice(args)
    if args.runtime_script:
        return None, choice.capability
    try:
        return choice.build_runtime(), choice.capability
    except RuntimeUnavailableError as exc:
        why = str(exc).splitlines()[0].split(" Do one of")[0].rstrip(". ")
        tools = "`ask` and `research` fail" if args.research else "`ask` fails"
        print(
            f"warning: no usable model ({why}); {tools} until there is one: pass --base-url "
            "URL for a server (see `q3agent serve-mcp --help`)",
            file=sys.stderr,
        )
        return None, choice.capability


def _check_store(args: argparse.Namespace) -> None:
    """A ``--store`` that does not exist is a mistake unless rag_ingest may fill it."""
    from pathlib import Path

    from q3agent.mcp_server import ServeConfigError

    if args.rag_store is None or Path(args.rag_store).expanduser().is_dir():
        return
    if args.allow_folder or args.allow_url:
        print(
            f"note: no RAG store at {args.rag_store} yet: a new one is made there for rag_ingest",
            file=sys.stderr,
        )
        return
    raise ServeConfigError(
        f"no RAG store at {args.rag_store}: check --store, or make one with `q3agent rag "
        f"ingest PATH --store {args.rag_store}` (or grant rag_ingest with --allow-folder DIR)"
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from q3agent.mcp_server import ServeConfigError, build_mcp_server, serve

    if args.agent and (args.model or args.runtime_script):
        return _error("--agent builds its own agent: drop --model / --script")
    _check_store(args)
    runtime, capability = (None, None) if args.agent else _serve_runtime(args)

    def ready(url: str) -> None:
        print(f"listening on {url} (streamable HTTP); Ctrl-C stops", file=sys.stderr, flush=True)

    async def main() -> None:
        if args.transport == "streamable-http":
            _check_http_flags(args)
        served = await _served_agent(args, runtime, capability)
        server = build_mcp_server(served, name=args.name)
        if args.transport == "stdio":
            print(f"serving MCP over stdio as {args.name!r}", file=sys.stderr, flush=True)
        await serve(
            server,
            transport=args.transport,
            host=args.host,
            port=args.port,
            token=args.token,
            path=args.path,
            allowed_hosts=args.allowed_host,
            on_ready=ready,
        )

    try:
        anyio.run(main)
    except ServeConfigError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        return INTERRUPTED
    return OK


def _check_http_flags(args: argparse.Namespace) -> None:
    """Refuse HTTP settings that would expose the agent (no token off this machine, a blank
    token, a bind that accepts any Host header) before the agent is built."""
    import os

    from q3agent.mcp_server import (
        TOKEN_ENV,
        ServeConfigError,
        allowed_hosts_for,
        check_http_settings,
    )

    check_http_settings(args.host, args.token or os.environ.get(TOKEN_ENV))
    if not allowed_hosts_for(args.host, args.port, args.allowed_host):
        raise ServeConfigError(
            f"serving on {args.host} needs --allowed-host NAME[:PORT] (the host name "
            "clients use), so that DNS-rebinding requests can be refused"
        )


async def _served_agent(args: argparse.Namespace, runtime: Any, capability: Any) -> ServedAgent:
    """The served agent the flags describe (``runtime``/``capability``: see _serve_runtime)."""
    from q3agent.cli.served_agent import make_served_agent, scripted_runtime
    from q3agent.mcp_server import ReadPolicy
    from q3agent.options import RunOptions

    if args.agent is None and args.runtime_script is not None:
        runtime = scripted_runtime(args.runtime_script)
    return await make_served_agent(
        agent_spec=args.agent,
        model=args.model,
        runtime=runtime,
        capability=capability,
        mcp_config=args.mcp_config,
        system_prompt=args.system,
        options=None if args.agent else RunOptions(max_steps=args.max_steps),
        read_policy=ReadPolicy.of(args.allow_folder, args.allow_url),
        rag_store=args.rag_store,
        rag_url=args.rag_url,
        research=args.research,
        max_task_tokens=args.max_task_tokens,
    )


def main(argv: list[str] | None = None) -> int:
    """Run only these subcommands (``python -m q3agent.cli.mcp serve-mcp ...``)."""
    parser = argparse.ArgumentParser(prog="q3agent", description="q3agent MCP commands")
    add_mcp_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
