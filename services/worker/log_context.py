"""Dramatiq middleware: every log line written while a message is processed names its job.

Binds the job id, actor, message id and queue into structlog's context variables before
the actor runs and removes them afterwards (worker threads are reused for other messages).
"""

from __future__ import annotations

import structlog
from dramatiq import Broker, Message
from dramatiq.middleware import Middleware

_KEYS = ("job_id", "actor", "message_id", "queue")


class LogContext(Middleware):
    def before_process_message(self, broker: Broker, message: Message) -> None:
        # A batch's message names many jobs: the batch binds each job's id while it runs it.
        first = message.args[0] if message.args else None
        structlog.contextvars.bind_contextvars(
            job_id=None if first is None or isinstance(first, list) else str(first),
            actor=message.actor_name,
            message_id=message.message_id,
            queue=message.queue_name,
        )

    def after_process_message(self, broker: Broker, message: Message, *, result=None, exception=None) -> None:
        structlog.contextvars.unbind_contextvars(*_KEYS)

    after_skip_message = after_process_message
