"""A provider that writes an account's `active: false` as a string or a number (RFC 7662 asks for a
boolean; not every provider complies) must not keep the disabled person signed in: the refresh's
userinfo check reads every spelling of "no" as disabled, and nothing else."""

from __future__ import annotations

import pytest

from tokens.identity_provider import UserinfoAnswer
from tokens.provider_accounts import account_verdict

SUBJECT = "person-1"


@pytest.mark.parametrize("active", [False, "false", "FALSE", " False ", 0, "0"])
def test_an_account_answered_inactive_in_any_spelling_is_disabled(active):
    verdict = account_verdict(UserinfoAnswer(200, {"sub": SUBJECT, "active": active}, ""), SUBJECT)
    assert verdict.disabled and verdict.reason == "userinfo answered active: false"


@pytest.mark.parametrize("claims", [{}, {"active": True}, {"active": "true"}, {"active": 1}, {"active": "1"}])
def test_an_account_answered_active_or_without_the_claim_stays_signed_in(claims):
    assert not account_verdict(UserinfoAnswer(200, {"sub": SUBJECT, **claims}, ""), SUBJECT).disabled
