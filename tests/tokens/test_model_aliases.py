"""Model alias rules as operators write them, and how a device's combine with its organization's."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from tokens.model_aliases import parse_model_aliases, served_model, validate_model_aliases
from tokens.models import Device, Organization
from tokens.policy import policy_from_json, policy_to_json, resolve_policy


def test_rules_are_one_per_line_or_comma_separated_and_the_first_match_wins():
    rules = parse_model_aliases("claude-opus-4-8 = claude-haiku-4-5\n claude-opus-* = claude-sonnet-4-5 , ")
    assert rules == (("claude-opus-4-8", "claude-haiku-4-5"), ("claude-opus-*", "claude-sonnet-4-5"))
    assert [served_model(rules, model) for model in ("claude-opus-4-8", "claude-opus-4-1", "claude-sonnet-4-5")] == [
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
    ]


@pytest.mark.parametrize("text", ["claude-opus-*", "claude-opus-* = ", "= claude-sonnet-4-5", "claude-opus-* = claude sonnet"])
def test_a_rule_that_is_not_pattern_equals_model_is_refused_by_the_admin(text):
    with pytest.raises(ValidationError, match="is not `pattern = model`"):
        validate_model_aliases(text)


def test_the_devices_rules_come_before_its_organizations_and_survive_the_policy_cache():
    organization = Organization(name="Acme", model_aliases="claude-opus-* = claude-sonnet-4-5")
    device = Device(device_id="d", model_aliases="claude-opus-4-8 = claude-haiku-4-5")
    policy = resolve_policy(device, organization)
    assert policy.model_aliases == (("claude-opus-4-8", "claude-haiku-4-5"), ("claude-opus-*", "claude-sonnet-4-5"))
    assert policy_from_json(policy_to_json(policy)) == policy
