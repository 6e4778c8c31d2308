"""Run a coroutine in place up to its first suspension, and finish it later only if it suspended.

The fast path delivers a message by calling the conductor's coroutine; almost
always it finishes without suspending, and then no task is made for it
(streams/runtime/fastpath.py, ``FastPathConsumer.deliver``).
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Go on running ``coro``, which already suspended once and yielded ``pending``.

    This is what ``yield from coro`` would do after its first step: hand each
    yielded future to the task running us, pass results and exceptions
    (cancellation included) back in.
    """
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    # A native coroutine around the generator: asyncio and mode accept it anywhere.
    return await _resume(coro, pending)


def eager_step(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any] | None:
    """Run ``coro`` until it first suspends.

    Returns None if it finished without suspending (its result is dropped, an
    exception propagates); otherwise a coroutine that finishes it when awaited
    (or run as a task, and cancelled like one).
    """
    try:
        pending = coro.send(None)
    except StopIteration:
        return None
    return _finish(coro, pending)
