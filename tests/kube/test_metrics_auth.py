"""The secured /metrics (ops.py + kube/review.py) against the fake API server's TokenReview and
SubjectAccessReview (tests/fakeapi/rbac.py): no token 401, a token nobody knows 401, a known
user without the right 403, the scraper the shipped ClusterRole binds 200; health needs nothing;
the API server's answers are cached; an API failure lets nobody in."""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from plumber_agent.clock import FakeClock
from plumber_agent.host.tlscert import server_context
from plumber_agent.kube.review import DENY_CACHE_TTL_S, TOKEN_CACHE_TTL_S, DelegatingAuth
from plumber_agent.ops import Metrics, OpsServer
from plumber_agent.sources import load_yaml_documents

REPO = Path(__file__).resolve().parents[2]
READER = REPO / "manifests/monitoring/metrics_reader_cluster_role.yaml"
HTTP_TIMEOUT_S = 10.0
SCRAPER_TOKEN, STRANGER_TOKEN = "prometheus-token", "stranger-token"


@pytest.fixture
def review_clock():
    return FakeClock()


@pytest.fixture
def auth(fake_api, kube, review_clock):
    fake_api.add_service_account_token(SCRAPER_TOKEN, "monitoring", "prometheus-k8s")
    fake_api.add_service_account_token(STRANGER_TOKEN, "default", "someone")
    fake_api.add_rbac(*load_yaml_documents(READER.read_text()))
    return DelegatingAuth(kube, monotonic=review_clock.monotonic)


@pytest.fixture
def secure(auth):
    ops = OpsServer("127.0.0.1:0", metrics=Metrics(), healthy=lambda: True, ready=lambda: True,
                    tls=server_context(None, node_name="node-a"), authorize=auth).start()
    yield f"https://127.0.0.1:{ops.port}"
    ops.stop()


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # insecureSkipVerify
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=HTTP_TIMEOUT_S, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _reviews(fake_api) -> int:
    return len(fake_api.requests(path_contains="review"))


def test_unauthenticated_unauthorized_and_authorized_scrapes(secure, fake_api):
    assert _get(secure + "/metrics") == (401, "Unauthorized\n")
    assert _get(secure + "/metrics", "nobody-knows-this") == (401, "Unauthorized\n")
    assert _get(secure + "/metrics", STRANGER_TOKEN) == (
        403, "Authorization denied for user system:serviceaccount:default:someone\n")
    status, text = _get(secure + "/metrics", SCRAPER_TOKEN)
    assert status == 200 and "# TYPE plumber_reconciles_total counter" in text
    # kubelet's probes carry no token.
    assert _get(secure + "/healthz") == (200, "ok\n")
    assert _get(secure + "/readyz") == (200, "ok\n")


def test_answers_are_cached_then_asked_again(secure, fake_api, review_clock):
    assert _get(secure + "/metrics", SCRAPER_TOKEN)[0] == 200
    assert _get(secure + "/metrics", STRANGER_TOKEN)[0] == 403
    asked = _reviews(fake_api)
    assert asked == 4  # a TokenReview and a SubjectAccessReview each
    assert _get(secure + "/metrics", SCRAPER_TOKEN)[0] == 200
    assert _get(secure + "/metrics", STRANGER_TOKEN)[0] == 403
    assert _reviews(fake_api) == asked
    review_clock.advance(max(TOKEN_CACHE_TTL_S, DENY_CACHE_TTL_S) + 1)
    assert _get(secure + "/metrics", STRANGER_TOKEN)[0] == 403
    assert _reviews(fake_api) == asked + 2


def test_an_api_failure_lets_nobody_in(secure, fake_api):
    fake_api.fail_next(1, 500, path_contains="tokenreviews")
    assert _get(secure + "/metrics", SCRAPER_TOKEN) == (500, "Authentication failed\n")
    fake_api.fail_next(1, 503, path_contains="subjectaccessreviews")
    assert _get(secure + "/metrics", SCRAPER_TOKEN) == (
        500, "Authorization for user system:serviceaccount:monitoring:prometheus-k8s failed\n")
    assert _get(secure + "/metrics", SCRAPER_TOKEN)[0] == 200


def test_plain_http_to_the_secure_port_gets_no_metrics(secure):
    plain = secure.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(plain + "/metrics", timeout=HTTP_TIMEOUT_S).read()


# ----------------------------------------------------------------------------------------------
# the fake's review endpoints: upstream's request and answer shapes, over raw HTTP


def _post(fake_api, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        fake_api.url + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {fake_api.token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def test_token_review_shapes(fake_api, auth):
    status, answer = _post(fake_api, TOKEN_REVIEWS, {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": SCRAPER_TOKEN}})
    assert status == 201
    assert answer["kind"] == "TokenReview" and answer["apiVersion"] == "authentication.k8s.io/v1"
    assert answer["metadata"] == {"creationTimestamp": None}
    user = answer["status"]["user"]
    assert answer["status"]["authenticated"] is True
    assert user["username"] == "system:serviceaccount:monitoring:prometheus-k8s"
    assert user["groups"] == ["system:serviceaccounts", "system:serviceaccounts:monitoring",
                              "system:authenticated"]
    assert user["uid"]
    # Not authenticated: authenticated and error omitted (omitempty), user empty.
    assert _post(fake_api, TOKEN_REVIEWS, {"spec": {"token": "unknown"}})[1]["status"] == {"user": {}}
    status, answer = _post(fake_api, TOKEN_REVIEWS, {"spec": {}})
    assert (status, answer["reason"], answer["message"]) == (
        400, "BadRequest", "token is required for TokenReview in authentication")


def test_subject_access_review_shapes(fake_api, auth):
    spec = {"user": "system:serviceaccount:monitoring:prometheus-k8s",
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}
    status, answer = _post(fake_api, ACCESS_REVIEWS, {"spec": spec})
    assert status == 201 and answer["spec"] == spec
    assert answer["status"] == {
        "allowed": True,
        "reason": 'RBAC: allowed by ClusterRoleBinding "plumber-metrics-reader" of ClusterRole '
                  '"plumber-metrics-reader" to ServiceAccount "prometheus-k8s/monitoring"'}
    for other in ({"nonResourceAttributes": {"path": "/metrics", "verb": "post"}},
                  {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}},
                  {"user": "system:serviceaccount:default:someone"}):
        assert _post(fake_api, ACCESS_REVIEWS, {"spec": {**spec, **other}})[1]["status"] == {
            "allowed": False}
    status, answer = _post(fake_api, ACCESS_REVIEWS, {"spec": {
        "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}})
    assert (status, answer["reason"]) == (422, "Invalid")
    assert answer["message"] == ('SubjectAccessReview.authorization.k8s.io "" is invalid: '
                                 'spec.user: Invalid value: "": at least one of user or group '
                                 'must be specified')
    status, answer = _post(fake_api, ACCESS_REVIEWS, {"spec": {"user": "u"}})
    assert answer["message"] == (
        'SubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: '
        'Invalid value: "null": exactly one of nonResourceAttributes or resourceAttributes must '
        'be specified')
