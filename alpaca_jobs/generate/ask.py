"""One generation request through the real ``openai`` client, retried by tenacity, with a
hook before every attempt (the spend journal reserves its worst case there) and after every
failed one (released when the server answered an error status, kept when the outcome is
unknown). Every attempt is counted, also those of a request that fails for good.

The retry policy is the project's (``alpaca_jobs.api``): 429, 408/409, 5xx, timeouts and
dropped connections are retried with jittered exponential backoff honouring Retry-After, at
most ``max_attempts`` times; anything else stops the request at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import tenacity

from alpaca_jobs.api import RETRYABLE_STATUS, ApiError, Client, Reply

log = logging.getLogger(__name__)


class RequestFailed(ApiError):
    """A request failed for good after ``attempts`` attempts."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class AskingClient(Client):
    """A ``Client`` whose requests report each attempt to the caller's hooks."""

    def ask(self, prompt: str, *, stop: list[str], seed: int,
            before: Callable[[int], Any], failed: Callable[[int, int | None], None]) -> tuple[Reply, Any]:
        """Send ``prompt``; return the reply and what ``before`` returned for the attempt that
        got it. ``before(attempt)`` runs before each attempt (may raise to stop the request);
        ``failed(attempt, status)`` after each failed one (status None: outcome unknown)."""
        args = {"model": self.cfg["model"], "max_tokens": self.cfg["max_tokens"],
                "temperature": self.cfg["temperature"], "top_p": self.cfg["top_p"],
                "stop": stop, "seed": seed}
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.cfg["max_attempts"]), wait=self._wait,
            retry=tenacity.retry_if_exception(self._retryable), before_sleep=self._log_retry,
            sleep=self._sleep, reraise=True)
        t0, attempt = time.monotonic(), 0
        try:
            for state in retrying:
                with state:
                    attempt = state.retry_state.attempt_number
                    token = before(attempt)
                    text, finish, usage = self._once(prompt, args, attempt, failed)
                    return Reply(text, finish, getattr(usage, "prompt_tokens", 0) or 0,
                                 getattr(usage, "completion_tokens", 0) or 0, attempt,
                                 time.monotonic() - t0), token
        except self._openai.APIStatusError as exc:
            if exc.status_code not in RETRYABLE_STATUS:
                raise RequestFailed(self._explain(exc), attempt) from None
            reason = f"HTTP {exc.status_code}"
        except (self._openai.APITimeoutError, self._openai.APIConnectionError) as exc:
            reason = type(exc).__name__
        raise RequestFailed(f"{self._where()}: gave up after {attempt} attempts ({reason}); "
                            "raise max_attempts or in_flight lower, or check the server", attempt)

    def _once(self, prompt: str, args: dict[str, Any], attempt: int,
              failed: Callable[[int, int | None], None]) -> tuple[str, str | None, Any]:
        try:
            if self.cfg["api"] == "chat":
                resp = self._client.chat.completions.create(
                    messages=[{"role": "user", "content": prompt}], **args)
                return resp.choices[0].message.content or "", resp.choices[0].finish_reason, resp.usage
            resp = self._client.completions.create(prompt=prompt, **args)
            return resp.choices[0].text or "", resp.choices[0].finish_reason, resp.usage
        except self._openai.APIStatusError as exc:
            failed(attempt, exc.status_code)
            raise
        except Exception:
            failed(attempt, None)
            raise

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, self._openai.APIStatusError):
            return exc.status_code in RETRYABLE_STATUS
        return isinstance(exc, (self._openai.APITimeoutError, self._openai.APIConnectionError))

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        response = getattr(exc, "response", None) if isinstance(exc, self._openai.APIStatusError) else None
        return self._retry_after(response) or self._backoff(state.attempt_number)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = (f"HTTP {exc.status_code}" if isinstance(exc, self._openai.APIStatusError)
                  else type(exc).__name__)
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: %s, retry %d/%d in %.1f s", self._where(), reason, state.attempt_number,
                    self.cfg["max_attempts"] - 1, wait)
