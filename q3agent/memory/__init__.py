"""Memory: sessions that survive restarts, the context window, and long-term user facts."""

from q3agent.memory.context_window import (
    NATIVE_CONTEXT,
    YARN_CONTEXT,
    ContextOverflowError,
    ContextWindow,
    FitResult,
    Summarize,
    context_window,
    summary_request,
)
from q3agent.memory.long_term import (
    Decider,
    LongTermMemory,
    MemoryDecision,
    MemoryFact,
    llm_decider,
    similarity_decider,
)
from q3agent.memory.sessions import (
    Lease,
    LeaseLost,
    Session,
    SessionBusy,
    SessionError,
    SessionState,
    SessionStore,
    SQLiteSessionStore,
    session_store,
)

__all__ = [
    "NATIVE_CONTEXT",
    "YARN_CONTEXT",
    "ContextOverflowError",
    "ContextWindow",
    "Decider",
    "FitResult",
    "Lease",
    "LeaseLost",
    "LongTermMemory",
    "MemoryDecision",
    "MemoryFact",
    "SQLiteSessionStore",
    "Session",
    "SessionBusy",
    "SessionError",
    "SessionState",
    "SessionStore",
    "Summarize",
    "context_window",
    "llm_decider",
    "session_store",
    "similarity_decider",
    "summary_request",
]
