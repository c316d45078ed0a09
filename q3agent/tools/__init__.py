"""Tools the model can call: definition (``@tool``, :class:`Tool`), validation and execution."""

from q3agent.tools.base import (
    StaticToolset,
    Tool,
    ToolArgumentsError,
    ToolDefinitionError,
    ToolError,
    Toolset,
    as_tool,
    collect_tools,
    render_output,
    resolve_tools,
)
from q3agent.tools.context import RunContext
from q3agent.tools.executor import (
    TOOL_CALL_FORMAT,
    ApprovalCallback,
    ToolErrorKind,
    ToolResult,
    execute_tool_calls,
    signature_hint,
    truncate_middle,
)
from q3agent.tools.function import (
    FunctionSchema,
    FunctionTool,
    clean_schema,
    function_schema,
    parse_docstring,
    tool,
)

__all__ = [
    "TOOL_CALL_FORMAT",
    "ApprovalCallback",
    "FunctionSchema",
    "FunctionTool",
    "RunContext",
    "StaticToolset",
    "Tool",
    "ToolArgumentsError",
    "ToolDefinitionError",
    "ToolError",
    "ToolErrorKind",
    "ToolResult",
    "Toolset",
    "as_tool",
    "clean_schema",
    "collect_tools",
    "execute_tool_calls",
    "function_schema",
    "parse_docstring",
    "render_output",
    "resolve_tools",
    "signature_hint",
    "tool",
    "truncate_middle",
]
