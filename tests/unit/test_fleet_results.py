"""The per-template result summary an agent publishes for the status writer (fleet/results.py).

Why: the writer counts every node from this annotation alone, so what it leaves out must be what
the counts do not use, its bounds must hold, and a broken or forged annotation must count the
node as not reported instead of breaking the writer.
"""
from __future__ import annotations

import json

from plumber_agent.fleet.results import (MAX_RESULT_MESSAGE, MAX_RESULTS_BYTES,
                                         RESULTS_ANNOTATION, compact_hostnetwork, compact_node,
                                         encode_summary, parse_summary)

TEMPLATES = [
    {"name": "vlans", "state": "Failed", "observedGeneration": 2, "message": "x" * 2000,
     "plannedActions": ["a", "b"], "plannedActionCount": 2},
    {"name": "mtu", "state": "Applied", "observedGeneration": 3, "message": "applied 4 actions"},
    {"name": "edge-only", "state": "NotSelected", "observedGeneration": 1},
    {"name": "bonds", "state": "Previewed", "observedGeneration": 5, "plannedActionCount": 7},
]


def test_summary_keeps_what_the_counts_use_and_bounds_messages():
    text = encode_summary(TEMPLATES)
    assert " " not in text  # compact JSON
    parsed = parse_summary(text)
    assert sorted(parsed) == ["bonds", "mtu", "vlans"]  # NotSelected counts as not reported
    assert parsed["mtu"] == {"name": "mtu", "state": "Applied", "observedGeneration": 3}
    assert parsed["bonds"]["plannedActionCount"] == 7
    message = parsed["vlans"]["message"]
    assert len(message) == MAX_RESULT_MESSAGE and message.endswith("...")
    assert "plannedActions" not in parsed["vlans"]


def test_summary_is_stable_for_equal_results():
    """Equal results give the same text, in any order: the sink writes only a changed one."""
    assert encode_summary(TEMPLATES) == encode_summary(list(reversed(TEMPLATES)))
    assert encode_summary(None) == encode_summary([]) == "[]"


def test_broken_or_oversized_summaries_count_as_not_reported():
    for text in (None, 7, "", "{", "{}", '"x"', json.dumps([1, {"state": "Applied"}]),
                 "[" + " " * MAX_RESULTS_BYTES + "]"):
        assert parse_summary(text) == {}, text
    assert parse_summary('[{"name": "mtu", "state": "Applied", "evil": 1}]') == {
        "mtu": {"name": "mtu", "state": "Applied"}}


def test_the_writer_keeps_names_versions_labels_and_results_only():
    hostnetwork = {"metadata": {"name": "n1", "resourceVersion": "9", "uid": "u",
                                "annotations": {RESULTS_ANNOTATION: encode_summary(TEMPLATES),
                                                "other": "x" * 1000}},
                   "status": {"interfaceStatus": [{"pfName": "eth0"}] * 100}}
    compact = compact_hostnetwork(hostnetwork)
    assert compact["metadata"] == {"name": "n1", "resourceVersion": "9"}
    assert sorted(compact["results"]) == ["bonds", "mtu", "vlans"]
    node = {"metadata": {"name": "n1", "resourceVersion": "4", "labels": {"role": "edge"},
                         "annotations": {"a": "b"}}, "status": {"images": [{}] * 50}}
    assert compact_node(node) == {"metadata": {"name": "n1", "resourceVersion": "4",
                                               "labels": {"role": "edge"}}}
