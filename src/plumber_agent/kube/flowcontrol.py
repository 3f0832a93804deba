"""The client-side rate limit on every API request the agent makes: a token bucket.

A port of client-go's `flowcontrol.NewTokenBucketRateLimiter(qps, burst)`
(`client-go/util/flowcontrol/throttle.go`, tokenBucketRateLimiter.Accept), which is
`golang.org/x/time/rate`'s Limiter: the bucket holds at most `burst` tokens, refills at `qps`
tokens a second and starts full. `accept()` reserves a token at once, letting the count go
negative (rate.Limiter.reserveN), then sleeps until that token would have arrived
(Reservation.DelayFrom): callers are served in the order they asked, each exactly 1/qps after
the one before once the burst is spent, and nobody spins or polls.

Why the agent needs it (issue 19): a DaemonSet multiplies every bug by the node count. A retry
loop gone wrong on 5,000 nodes is 5,000 tight loops against one API server; the bucket bounds
each agent to `qps` requests a second whatever its code does, as kubelet and every client-go
program are bounded. Time comes from the injected clock, so tests never sleep.
"""
from __future__ import annotations

import logging
import threading

from plumber_agent.clock import Clock  # the clock and this module import nothing heavy (cli.py)

log = logging.getLogger(__name__)

# client-go request.go logs a throttled request at info level past extraLongThrottleLatency.
LONG_THROTTLE_S = 1.0


class TokenBucket:
    """`qps` tokens a second, at most `burst` banked (see module doc). Thread-safe."""

    def __init__(self, *, qps: float, burst: int, clock: Clock):
        if qps <= 0:
            raise ValueError(f"qps must be > 0 (got {qps}); use no limiter to disable limiting")
        if burst < 1:
            raise ValueError(f"burst must be >= 1 (got {burst}): a bucket of 0 admits nothing")
        self.qps, self.burst = float(qps), int(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(burst)  # rate.NewLimiter: the first advance fills the bucket
        self._last = clock.monotonic()
        self.accepted = 0
        self.throttled = 0  # requests that had to wait
        self.waited_s = 0.0  # total time they waited

    def _advance(self, now: float) -> float:
        """rate.Limiter.advance: the tokens at `now` (refilled since the last reservation,
        capped at burst). A clock reading earlier than the last one adds nothing."""
        elapsed = max(0.0, now - self._last)
        return min(float(self.burst), self._tokens + elapsed * self.qps)

    def reserve(self) -> float:
        """rate.Limiter.reserveN(now, 1): take a token now; return how long to wait for it."""
        with self._lock:
            now = self._clock.monotonic()
            tokens = self._advance(now) - 1.0
            delay_s = -tokens / self.qps if tokens < 0 else 0.0
            self._last, self._tokens = max(now, self._last), tokens
            self.accepted += 1
            if delay_s > 0:
                self.throttled += 1
                self.waited_s += delay_s
        return delay_s

    def accept(self) -> float:
        """Block until this request may go (tokenBucketRateLimiter.Accept); returns the wait."""
        delay_s = self.reserve()
        if delay_s > 0:
            if delay_s >= LONG_THROTTLE_S:
                log.info("waited %.1fs before an API request: client-side throttling "
                         "(--kube-api-qps %g, --kube-api-burst %d), not the server's "
                         "priority and fairness", delay_s, self.qps, self.burst)
            self._clock.sleep(delay_s)
        return delay_s

    def try_accept(self) -> bool:
        """rate.Limiter.AllowN(now, 1): take a token only if one is there now."""
        with self._lock:
            now = self._clock.monotonic()
            tokens = self._advance(now)
            if tokens < 1.0:
                return False
            self._last, self._tokens = max(now, self._last), tokens - 1.0
            self.accepted += 1
            return True


# --- The agent's defaults (`plumber-agent run --kube-api-qps/--kube-api-burst`) --------------
# Kubelet allows itself 50 QPS, burst 100 (kubeAPIQPS/kubeAPIBurst since 1.27): it writes the
# status of up to 110 pods, its Node, its Lease, Events, and reads Secrets and ConfigMaps for
# every pod. This agent, once started, makes almost no requests: its watches (opened once every
# 5-10 min), a HostNetwork status write per managed change, a rollout slot renewal every 5 s
# while applying, and Events on transitions: well under 1 QPS. A kubelet-sized bucket would let
# a bug on 5,000 nodes send 250,000 requests a second; client-go's default rate, 5 QPS, is
# 10 times the agent's busiest steady state and caps that fleet at 25,000 (and the API
# Priority and Fairness FlowSchema in manifests/apf/ caps the fleet as a whole).
DEFAULT_QPS = 5.0
# The burst is sized for a start, the busiest moment: about 12 requests for any agent (4 lists
# and 4 watches, the HostNetwork's get/create and first status write, a slot) and 20 or so for
# the status writer (2 more lists and watches, a status write and an Event per template). 20
# lets a normal start run unthrottled, where client-go's default burst of 10 would delay it.
DEFAULT_BURST = 20
