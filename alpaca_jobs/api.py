"""Calls to an OpenAI-compatible endpoint through the real ``openai`` client, with our own
retry policy run by tenacity (so every attempt is counted and logged, also those of a request
that fails for good): 429, 408/409, 5xx, timeouts and dropped connections are retried with
jittered exponential backoff, honouring Retry-After, at most ``max_attempts`` times; any other
error (bad key, unknown model, bad request) stops at once with a message that says what to
change. One request path (``Client.ask``) for the generate and evaluate jobs; hooks before and
after each attempt let generation journal its worst-case spend.

The API key is read from the environment variable the spec names and is never logged,
pickled or written anywhere: only the variable's name travels in payloads.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tenacity

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.ops.prices import ApiPrice, api_price

log = logging.getLogger(__name__)
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
_NO_KEY = "no-key"  # local servers without keys still need a non-empty string for the client


class ApiError(UserError):
    """A request failed for good (not retryable, or out of attempts)."""


class RequestFailed(ApiError):
    """A request failed for good after ``attempts`` attempts."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass
class Reply:
    text: str
    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    attempts: int
    seconds: float


@dataclass
class Spend:
    """Running totals of what an endpoint cost; thread-safe."""

    price: ApiPrice
    requests: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    failed_requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_failed(self, attempts: int) -> None:
        """A request that failed for good: its attempts after the first were retries."""
        with self._lock:
            self.failed_requests += 1
            self.retries += attempts - 1

    def add(self, reply: Reply) -> None:
        with self._lock:
            self.requests += 1
            self.retries += reply.attempts - 1
            self.input_tokens += reply.input_tokens
            self.output_tokens += reply.output_tokens

    def cost(self, input_tokens: int | None = None, output_tokens: int | None = None) -> float:
        i = self.input_tokens if input_tokens is None else input_tokens
        o = self.output_tokens if output_tokens is None else output_tokens
        return (i * self.price.input_usd_per_mtok + o * self.price.output_usd_per_mtok) / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": self.retries, "failed_requests": self.failed_requests,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cost_usd": round(self.cost(), 6),
                "input_usd_per_mtok": self.price.input_usd_per_mtok,
                "output_usd_per_mtok": self.price.output_usd_per_mtok, "price_source": self.price.source}


class Client:
    """One endpoint (an ``Endpoint`` from the spec, as a dict or model)."""

    def __init__(self, endpoint: Any, sleep=time.sleep) -> None:
        import openai

        self.cfg = endpoint if isinstance(endpoint, dict) else endpoint.model_dump()
        key = os.environ.get(self.cfg["api_key_env"])
        base_url = self.cfg.get("base_url")
        if not key and (base_url is None or "api.openai.com" in base_url):
            raise UserError(f"no API key: set the environment variable {self.cfg['api_key_env']} "
                            "(on Kubernetes: k8s.secret_env) for the OpenAI API")
        self.price = api_price(self.cfg["model"], base_url, self.cfg.get("input_usd_per_mtok"),
                               self.cfg.get("output_usd_per_mtok"))
        self.spend = Spend(self.price)
        self._sleep = sleep
        self._openai = openai
        self._client = openai.OpenAI(api_key=key or _NO_KEY, base_url=base_url,
                                     timeout=self.cfg["timeout_seconds"], max_retries=0)

    @property
    def model(self) -> str:
        return self.cfg["model"]

    def complete(self, prompt: str, *, system: str | None = None, max_tokens: int | None = None,
                 temperature: float | None = None, stop: list[str] | None = None,
                 seed: int | None = None) -> Reply:
        """One prompt in, one reply out, through the configured API (chat or completions)."""
        args: dict[str, Any] = {
            "model": self.cfg["model"], "max_tokens": max_tokens or self.cfg["max_tokens"],
            "temperature": self.cfg["temperature"] if temperature is None else temperature,
            "top_p": self.cfg["top_p"],
        }
        if stop:
            args["stop"] = stop
        if seed is not None:
            args["seed"] = seed
        try:
            reply, _ = self.ask(prompt, args=args, system=system)
        except RequestFailed as exc:
            self.spend.add_failed(exc.attempts)
            raise
        self.spend.add(reply)
        return reply

    def ask(self, prompt: str, *, args: dict[str, Any], system: str | None = None,
            before: Callable[[int], Any] = lambda attempt: None,
            failed: Callable[[int, int | None], None] = lambda attempt, status: None) -> tuple[Reply, Any]:
        """Send ``prompt``; return the reply and what ``before`` returned for the attempt that
        got it. ``before(attempt)`` runs before each attempt (may raise to stop the request);
        ``failed(attempt, status)`` after each failed one (status None: outcome unknown).
        Raises RequestFailed (with the attempts made) when the request fails for good."""
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
                    text, finish, usage = self._once(prompt, system, args, attempt, failed)
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

    def _once(self, prompt: str, system: str | None, args: dict[str, Any], attempt: int,
              failed: Callable[[int, int | None], None]) -> tuple[str, str | None, Any]:
        try:
            if self.cfg["api"] == "chat":
                messages = ([{"role": "system", "content": system}] if system else [])
                messages.append({"role": "user", "content": prompt})
                resp = self._client.chat.completions.create(messages=messages, **args)
                return resp.choices[0].message.content or "", resp.choices[0].finish_reason, resp.usage
            full = f"{system}\n\n{prompt}" if system else prompt
            resp = self._client.completions.create(prompt=full, **args)
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

    def _backoff(self, attempt: int) -> float:
        cap = min(self.cfg["max_backoff_seconds"], self.cfg["backoff_seconds"] * 2 ** (attempt - 1))
        return random.uniform(0.5 * cap, cap)  # jitter: concurrent clients spread out

    def _retry_after(self, response: Any) -> float | None:
        headers = getattr(response, "headers", None) or {}
        for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
            raw = headers.get(name)
            if raw is None:
                continue
            try:
                return min(max(float(raw) * scale, 0.0), self.cfg["max_backoff_seconds"])
            except ValueError:
                from email.utils import parsedate_to_datetime

                try:
                    return min(max(parsedate_to_datetime(raw).timestamp() - time.time(), 0.0),
                               self.cfg["max_backoff_seconds"])
                except (TypeError, ValueError):
                    return None
        return None

    def _where(self) -> str:
        return f"{self.cfg.get('base_url') or 'api.openai.com'} ({self.cfg['model']})"

    def _explain(self, exc: Any) -> str:
        hint = {401: f"the key in {self.cfg['api_key_env']} was refused",
                403: "the key may not use this model", 404: "unknown model or wrong base_url",
                400: "the server rejected the request (max_tokens too large for the model?)"}
        msg = getattr(exc, "message", "") or str(exc)
        return (f"{self._where()}: HTTP {exc.status_code}: {msg[:300]}"
                + (f" -- {hint[exc.status_code]}" if exc.status_code in hint else ""))
