"""The caller's request context in the threads it starts.

oslo.context keeps the request context (Nova's ``req-...`` id, the user
and project) in a thread-local store, where oslo.log's formatter looks for
it: a line logged from a new thread would lose it.  A function handed to
a thread is wrapped here, in the caller's thread, so that its lines keep
the request they serve.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from oslo_context import context

T = TypeVar('T')


def carried(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn``, run with the calling thread's request context stored in
    whichever thread runs it (none stored: as it was)."""
    current = context.get_current()

    def run(*args: object, **kwargs: object) -> T:
        if current is not None:
            current.update_store()
        return fn(*args, **kwargs)
    return run
