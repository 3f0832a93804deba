"""The image under test, built once per session from the Containerfile on the stand-in base.

In CI (CI=true) a machine that cannot build it (no podman, not root) fails these tests:
scripts/install-deps.sh installs podman, so a skip there would hide a broken CI set-up. Elsewhere
they skip with the reason.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional

import pytest

from tests.image.container import (TEST_IMAGE, build_image, build_standin_base, in_ci,
                                   podman_missing_reason)

if TYPE_CHECKING:
    from tests.image.launcher import ImageCluster


def require_podman() -> None:
    reason = podman_missing_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def standin_base() -> str:
    """Tag of scripts/make-base-image.sh's stand-in for python:3.11-slim-bookworm."""
    require_podman()
    base = build_standin_base()
    print(f"\nimage: stand-in base {base.value} ready in {base.seconds:.0f} s")
    return base.value


@pytest.fixture(scope="session")
def agent_image(standin_base: str) -> str:
    """Tag of the image freshly built from the Containerfile on the stand-in base."""
    image = build_image(base=standin_base, image=TEST_IMAGE)
    print(f"\nimage: {image.value} (script time {image.seconds:.0f} s)")
    return TEST_IMAGE


_state: dict = {"cluster": None}


@pytest.fixture(scope="module")
def image_cluster(agent_image: str) -> Iterator[ImageCluster]:
    """One simulated node whose agent runs from the image (tests/image/launcher.py), against the
    in-repo fake API server (a $KUBECONFIG in the environment is ignored here)."""
    from tests.e2e.harness import local_skip_reason
    from tests.image.launcher import ImageCluster

    reason = local_skip_reason()
    if reason:
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("KUBECONFIG", raising=False)
        instance = ImageCluster.start_with_image(image=agent_image, count=1)
    _state["cluster"] = instance
    try:
        yield instance
    finally:
        _state["cluster"] = None
        instance.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test gets the containerised agent's log attached."""
    outcome = yield
    report = outcome.get_result()
    instance: Optional[ImageCluster] = _state["cluster"]
    if report.failed and instance is not None:
        report.sections.append(("plumber agent logs (container)", instance.collect_logs()))
