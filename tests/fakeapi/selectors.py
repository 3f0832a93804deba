"""metav1.LabelSelector as the API server reads it (one owner: the fake's PodDisruptionBudgets
and tests/security/vap.py's param selectors).

`apimachinery/pkg/apis/meta/v1/helpers.go` LabelSelectorAsSelector: a nil selector selects
nothing, an empty one everything; matchLabels are equalities, matchExpressions In / NotIn /
Exists / DoesNotExist (`labels.NewRequirement`: In and NotIn need values, Exists and
DoesNotExist none); anything else is an error.
"""
from __future__ import annotations

from typing import Any, Optional


class InvalidSelector(ValueError):
    """LabelSelectorAsSelector's error: the selector cannot be built."""


OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def _requirements(selector: dict) -> list[tuple[str, str, tuple]]:
    requirements = [(str(key), "In", (str(value),))
                    for key, value in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or ():
        key, operator = expression.get("key"), expression.get("operator")
        values = tuple(expression.get("values") or ())
        if operator not in OPERATORS:
            raise InvalidSelector(f'"{operator}" is not a valid label selector operator')
        if operator in ("In", "NotIn") and not values:
            raise InvalidSelector("values: Invalid value: []string(nil): for 'in', 'notin' "
                                  "operators, values set can't be empty")
        if operator in ("Exists", "DoesNotExist") and values:
            raise InvalidSelector("values: Invalid value: []string{...}: values set must be "
                                  "empty for exists and does not exist")
        requirements.append((str(key), operator, values))
    return requirements


def selector_empty(selector: Optional[Any]) -> bool:
    """labels.Selector.Empty() of LabelSelectorAsSelector(selector): an empty selector (it
    selects everything); a nil one is labels.Nothing(), not empty."""
    return isinstance(selector, dict) and not _requirements(selector)


def selector_matches(selector: Optional[Any], labels: dict) -> bool:
    """LabelSelectorAsSelector(selector).Matches(labels); raises InvalidSelector."""
    if not isinstance(selector, dict):
        return False  # nil: labels.Nothing()
    return requirements_match(_requirements(selector), labels)


def requirements_match(requirements: list[tuple[str, str, tuple]], labels: dict) -> bool:
    """labels.internalSelector.Matches: every requirement (key, operator, values) holds (also
    the equality-based `labelSelector=` of a list, server.py _parse_label_selector)."""
    for key, operator, values in requirements:
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True
