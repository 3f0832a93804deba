"""Who may scrape /metrics: the API server decides, as for controller-runtime's
`filters.WithAuthenticationAndAuthorization` (pkg/metrics/filters/filters.go) and
kube-rbac-proxy.

- authentication: the request's bearer token goes to a TokenReview; not authenticated is 401
  `Unauthorized`;
- authorization: the user (name, uid, groups, extra) goes to a SubjectAccessReview for the
  non-resource URL of the request (`/metrics`, verb `get`, the lower-cased HTTP method, as
  the filter builds AttributesRecord); not allowed is 403 `Authorization denied for user U`;
- an API error is 500 (`Authentication failed`, `Authorization for user U failed`), never a
  200: no answer from the API server lets nobody in;
- answers are cached like controller-runtime's settings: a token's review 1 minute
  (DelegatingAuthenticatorConfig.CacheTTL), an allow 5 minutes, a deny 30 s
  (DelegatingAuthorizerConfig.AllowCacheTTL/DenyCacheTTL); Prometheus scrapes every 15-60 s
  with the same token, so a scrape costs the API server nothing most of the time. Each cache
  holds at most CACHE_ENTRIES (the oldest goes first): random tokens cannot grow it.
Tokens are cached by their SHA-256, never as text.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Callable, Optional

from plumber_agent.ops import AuthDecision

log = logging.getLogger(__name__)

TOKEN_CACHE_TTL_S = 60.0
ALLOW_CACHE_TTL_S = 300.0
DENY_CACHE_TTL_S = 30.0
CACHE_ENTRIES = 1024
REVIEW_TIMEOUT_S = 10.0  # controller-runtime's TokenAccessReviewTimeout
METRICS_PATH = "/metrics"
METRICS_VERB = "get"


class _TtlCache:
    def __init__(self, monotonic: Callable[[], float], *, entries: int = CACHE_ENTRIES) -> None:
        self._monotonic = monotonic
        self._entries = entries
        self._lock = threading.Lock()
        self._items: OrderedDict = OrderedDict()

    def get(self, key):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            value, expires = item
            if self._monotonic() >= expires:
                del self._items[key]
                return None
            return value

    def put(self, key, value, ttl_s: float) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (value, self._monotonic() + ttl_s)
            while len(self._items) > self._entries:
                self._items.popitem(last=False)


class DelegatingAuth:
    """`authorize(token) -> AuthDecision` for OpsServer, backed by a KubeClient's
    create_token_review and create_subject_access_review."""

    def __init__(self, client, *, monotonic: Callable[[], float],
                 path: str = METRICS_PATH, verb: str = METRICS_VERB) -> None:
        self._client = client
        self._path, self._verb = path, verb
        self._users = _TtlCache(monotonic)      # token digest -> user info (None: not authenticated)
        self._decisions = _TtlCache(monotonic)  # user key -> allowed

    def __call__(self, token: Optional[str]) -> AuthDecision:
        if not token:
            return AuthDecision(401, "Unauthorized")
        try:
            user = self._authenticate(token)
        except Exception as exc:  # the API server failed: nobody in, and say so in the log
            log.error("metrics: TokenReview failed: %s", exc)
            return AuthDecision(500, "Authentication failed")
        if user is None:
            return AuthDecision(401, "Unauthorized")
        name = user.get("username") or ""
        try:
            allowed = self._authorize(user)
        except Exception as exc:
            log.error("metrics: SubjectAccessReview for user %s failed: %s", name, exc)
            return AuthDecision(500, f"Authorization for user {name} failed")
        if not allowed:
            return AuthDecision(403, f"Authorization denied for user {name}")
        return AuthDecision(200)

    def _authenticate(self, token: str) -> Optional[dict]:
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._users.get(digest)
        if cached is not None:
            return cached or None
        answer = self._client.create_token_review(token, timeout_s=REVIEW_TIMEOUT_S)
        status = answer.get("status") or {}
        user = (status.get("user") or {}) if status.get("authenticated") is True else {}
        if status.get("error"):
            log.info("metrics: token not authenticated: %s", status["error"])
        self._users.put(digest, user, TOKEN_CACHE_TTL_S)
        return user or None

    def _authorize(self, user: dict) -> bool:
        extra = {key: list(values) for key, values in sorted((user.get("extra") or {}).items())}
        spec = {"user": user.get("username") or "", "groups": list(user.get("groups") or []),
                "nonResourceAttributes": {"path": self._path, "verb": self._verb}}
        if user.get("uid"):
            spec["uid"] = user["uid"]
        if extra:
            spec["extra"] = extra
        key = repr((spec["user"], spec.get("uid"), tuple(spec["groups"]), sorted(extra.items())))
        cached = self._decisions.get(key)
        if cached is not None:
            return cached
        answer = self._client.create_subject_access_review(spec, timeout_s=REVIEW_TIMEOUT_S)
        status = answer.get("status") or {}
        allowed = status.get("allowed") is True and status.get("denied") is not True
        if not allowed and status.get("evaluationError"):
            log.info("metrics: SubjectAccessReview evaluation error: %s", status["evaluationError"])
        self._decisions.put(key, allowed, ALLOW_CACHE_TTL_S if allowed else DENY_CACHE_TTL_S)
        return allowed
