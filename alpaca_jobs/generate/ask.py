"""One generation request: the project's one request path (``alpaca_jobs.api.Client.ask``,
retried by tenacity, every attempt counted) with the generation's own arguments and hooks (the
spend journal reserves each attempt's worst case before it is sent, and releases it after a
failed one when the server answered an error status)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alpaca_jobs.api import Client, Reply, RequestFailed

__all__ = ["AskingClient", "RequestFailed"]


class AskingClient(Client):
    """A ``Client`` whose generation requests report each attempt to the caller's hooks."""

    def ask_tasks(self, prompt: str, *, stop: list[str], seed: int, before: Callable[[int], Any],
                  failed: Callable[[int, int | None], None]) -> tuple[Reply, Any]:
        args = {"model": self.cfg["model"], "max_tokens": self.cfg["max_tokens"],
                "temperature": self.cfg["temperature"], "top_p": self.cfg["top_p"],
                "stop": stop, "seed": seed}
        return self.ask(prompt, args=args, before=before, failed=failed)
