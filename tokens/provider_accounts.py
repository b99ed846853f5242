"""Whether the identity provider still vouches for a person's account, asked at each device refresh
right after the provider renewed the session.

Providers differ in how a disabled account shows to a relying party. Most stop honouring its refresh
tokens (`invalid_grant`, handled in tokens.provider_sessions); some keep renewing them until they
expire and refuse the account only where it is used: the userinfo endpoint answers the access token
they have just issued with 401 (or 403), or answers the account with `active: false`. So the fresh
access token is shown to the userinfo endpoint, and:

- 401, or 403 other than `insufficient_scope`: the account is disabled;
- 200 with `active: false` (or a provider's `"false"`, `0`, `"0"`: RFC 7662 says boolean, not all
  providers do, and a "no" misread as "yes" keeps a disabled person in): the account is disabled;
- 200 for another subject: not this person's answer (OpenID Connect Core 5.3.2 forbids using it);
  the gateway's client is misconfigured, not the person: logged, not held against them;
- 403 `insufficient_scope`, another 4xx: the gateway's client is misconfigured: logged, likewise;
- no answer, a timeout, a 5xx (IdentityProviderUnavailable): the caller goes on (an outage must not
  log everyone out).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokens.identity_provider import UserinfoAnswer


@dataclass(frozen=True, slots=True)
class AccountVerdict:
    """`disabled` with the provider's reason, or not; `problem` names a misconfiguration to log."""

    disabled: bool
    reason: str = ""
    problem: str = ""


def account_verdict(answer: UserinfoAnswer, subject: str) -> AccountVerdict:
    if answer.status == 401 or (answer.status == 403 and answer.bearer_error != "insufficient_scope"):
        return AccountVerdict(True, f"userinfo answered {answer.status} {answer.bearer_error or 'without a reason'}".rstrip())
    if answer.status != 200:
        return AccountVerdict(False, problem=f"userinfo answered {answer.status} {answer.bearer_error}".rstrip())
    if str(answer.claims.get("sub", "")) != subject:
        return AccountVerdict(False, problem="userinfo answered for another subject")
    if says_inactive(answer.claims.get("active", True)):
        return AccountVerdict(True, "userinfo answered active: false")
    return AccountVerdict(False)


INACTIVE_TEXTS = frozenset({"false", "0"})


def says_inactive(active: object) -> bool:
    """`active` as a provider may write "no": the JSON false, 0, or either as a string."""
    if isinstance(active, bool):
        return not active
    if isinstance(active, int):
        return active == 0
    return isinstance(active, str) and active.strip().lower() in INACTIVE_TEXTS
