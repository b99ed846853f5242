"""The desktop client's loopback listener in a sign-in by the authorization code flow: any program
on the computer, or a web page the person has open, can send a request to 127.0.0.1:<port>. Only the
redirect carrying the sign-in's own state is taken; anything else is refused and the listener goes
on waiting for the real one, and a connection that sends nothing does not hold it."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx

from proxyclient.loopback import LoopbackReceiver, state_of

AUTHORIZATION_URL = "https://login.example.com/authorize?response_type=code&state=the-real-state-0123456789&nonce=n"


def test_loopback_callback_with_another_sign_ins_state_is_refused_and_the_real_one_still_taken():
    with LoopbackReceiver() as receiver:
        receiver.expect_state(state_of(AUTHORIZATION_URL))
        forged = httpx.get(receiver.redirect_uri, params={"code": "attackers-code", "state": "guessed-state"})
        assert forged.status_code == 400
        assert receiver.wait(0) is None
        genuine = httpx.get(receiver.redirect_uri, params={"code": "persons-code", "state": "the-real-state-0123456789"})
        assert genuine.status_code == 200
        assert receiver.wait(0) == {"code": "persons-code", "state": "the-real-state-0123456789"}


def test_loopback_callback_without_state_is_refused():
    with LoopbackReceiver() as receiver:
        receiver.expect_state(state_of(AUTHORIZATION_URL))
        assert httpx.get(receiver.redirect_uri, params={"code": "attackers-code"}).status_code == 400
        assert receiver.wait(0) is None


def test_loopback_callback_before_the_sign_in_started_is_refused():
    """The listener is up before the gateway has named the state; a request in that gap is not taken."""
    with LoopbackReceiver() as receiver:
        response = httpx.get(receiver.redirect_uri, params={"code": "early-code", "state": ""})
        assert response.status_code == 400 and receiver.wait(0) is None


def test_a_local_program_holding_a_silent_connection_cannot_stall_the_real_redirect():
    with LoopbackReceiver() as receiver, socket.create_connection(("127.0.0.1", urlsplit(receiver.redirect_uri).port or 0)):
        receiver.expect_state(state_of(AUTHORIZATION_URL))
        genuine = httpx.get(
            receiver.redirect_uri, params={"code": "persons-code", "state": "the-real-state-0123456789"}, timeout=3
        )
        assert genuine.status_code == 200
        assert receiver.wait(0) == {"code": "persons-code", "state": "the-real-state-0123456789"}
