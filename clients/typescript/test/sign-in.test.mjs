// Against a live gateway that enrolls devices by signing their person in (ENROLLMENT_MODE=oidc) and
// its test identity provider: tests/proxyclient/test_typescript.py names them in
// PROXY_TEST_PEOPLE_GATEWAY_URL. The "browser" fetches the verification URL, which the test
// provider takes as the person's approval.
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";

import { defaultTokenStore, ProxyBootstrap } from "../dist/esm/index.js";

const GATEWAY = process.env.PROXY_TEST_PEOPLE_GATEWAY_URL;
const live = { skip: GATEWAY ? false : "no people gateway: run through tests/proxyclient/test_typescript.py" };

async function client(signIn) {
  const stateDir = await mkdtemp(join(tmpdir(), "proxy-sign-in-"));
  const sources = [];
  const bootstrap = new ProxyBootstrap(
    { bootstrapUrl: `${GATEWAY}/bootstrap`, appVersion: "7.0.1", appName: "Scribe", deviceName: "ts-person-laptop" },
    { store: await defaultTokenStore(stateDir, { useKeychain: false }), signIn, onRenewed: (source) => sources.push(source) },
  );
  return { bootstrap, sources };
}

const approveInBrowser = async (url) => assert.equal((await fetch(url)).status, 200);
const neverSleep = async (ms) => assert.fail(`polled again after ${ms} ms: the sign-in should have been approved already`);

describe("sign-in on a live gateway", live, () => {
  test("token() signs the person in through the opener when the gateway asks for it", async () => {
    const prompts = [];
    const opened = [];
    const { bootstrap, sources } = await client({
      opener: async (url) => {
        opened.push(url);
        await approveInBrowser(url);
      },
      onPrompt: (prompt) => prompts.push(prompt),
      sleep: neverSleep,
    });
    const token = await bootstrap.token();
    assert.equal(token.split(".").length, 3);
    assert.deepEqual(sources, ["sign_in"]);
    assert.equal(prompts.length, 1);
    assert.match(prompts[0].userCode, /^\d{8}$/);
    assert.deepEqual(opened, [prompts[0].verificationUriComplete]);
    assert.ok(prompts[0].verificationUriComplete.endsWith(`user_code=${prompts[0].userCode}`));
  });

  test("signIn() then refreshes silently", async () => {
    const { bootstrap, sources } = await client(undefined);
    const first = await bootstrap.signIn({ opener: approveInBrowser, sleep: neverSleep });
    const renewed = await bootstrap.renew(first.wrapperToken);
    assert.notEqual(renewed.wrapperToken, first.wrapperToken);
    assert.deepEqual(sources, ["sign_in", "refresh"]);
  });

  test("without signIn options the gateway's sign_in_required reaches the app", async () => {
    const { bootstrap } = await client(undefined);
    await assert.rejects(bootstrap.token(), (error) => error.errorCode === "sign_in_required");
  });
});

// A gateway whose provider has no device grant (PROXY_TEST_CODE_FLOW_GATEWAY_URL): the code flow with
// PKCE and a loopback redirect. The test provider signs the person in at once, so the "browser" that
// follows the authorization URL is sent straight back to the client's listener.
const CODE_FLOW_GATEWAY = process.env.PROXY_TEST_CODE_FLOW_GATEWAY_URL;
const codeFlow = { skip: CODE_FLOW_GATEWAY ? false : "no code-flow gateway: run through tests/proxyclient/test_typescript.py" };

async function codeFlowClient() {
  const stateDir = await mkdtemp(join(tmpdir(), "proxy-code-flow-"));
  const sources = [];
  const bootstrap = new ProxyBootstrap(
    { bootstrapUrl: `${CODE_FLOW_GATEWAY}/bootstrap`, appVersion: "7.0.1", appName: "Scribe", deviceName: "ts-code-flow" },
    { store: await defaultTokenStore(stateDir, { useKeychain: false }), onRenewed: (source) => sources.push(source) },
  );
  return { bootstrap, sources };
}

const followInBrowser = async (url) => assert.equal((await fetch(url)).status, 200);

async function listenerIsClosed(redirectUri) {
  await assert.rejects(fetch(redirectUri), (error) => error.cause?.code === "ECONNREFUSED");
}

describe("sign-in by the code flow with a loopback redirect", codeFlow, () => {
  test("signIn() opens the provider's page, receives the redirect on 127.0.0.1 and closes the listener", async () => {
    const { bootstrap, sources } = await codeFlowClient();
    const prompts = [];
    const opened = [];
    const grant = await bootstrap.signIn({
      opener: async (url) => {
        opened.push(url);
        await followInBrowser(url);
      },
      onPrompt: (prompt) => prompts.push(prompt),
      sleep: neverSleep,
    });
    assert.equal(grant.wrapperToken.split(".").length, 3);
    assert.deepEqual(sources, ["sign_in"]);
    const [url] = opened;
    const query = new URL(url).searchParams;
    assert.equal(query.get("code_challenge_method"), "S256");
    assert.match(query.get("redirect_uri"), /^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    assert.deepEqual(prompts, [{ verificationUri: url, verificationUriComplete: url, userCode: "", expiresInMs: 600_000 }]);
    await listenerIsClosed(query.get("redirect_uri"));
    const renewed = await bootstrap.renew(grant.wrapperToken);
    assert.deepEqual(sources, ["sign_in", "refresh"]);
    assert.notEqual(renewed.wrapperToken, grant.wrapperToken);
  });

  test("a callback with another state is refused, and the real redirect still signs the person in", async () => {
    const { bootstrap } = await codeFlowClient();
    const forged = [];
    const grant = await bootstrap.signIn({
      opener: async (url) => {
        const redirectUri = new URL(url).searchParams.get("redirect_uri");
        const attack = new URL(redirectUri);
        attack.search = new URLSearchParams({ code: "attackers-code", state: "guessed-state" }).toString();
        forged.push((await fetch(attack)).status);
        await followInBrowser(url);
      },
    });
    assert.deepEqual(forged, [400]);
    assert.equal(grant.wrapperToken.split(".").length, 3);
  });

  test("a person who never comes back times out cleanly and the listener is closed", async () => {
    const { bootstrap } = await codeFlowClient();
    let redirectUri = "";
    await assert.rejects(
      bootstrap.signIn({ opener: (url) => (redirectUri = new URL(url).searchParams.get("redirect_uri")), timeoutMs: 300 }),
      (error) => error.name === "SignInFailed" && error.errorCode === "sign_in_expired",
    );
    await listenerIsClosed(redirectUri);
  });

  test("the provider's refusal brought back by the browser ends the sign-in as denied", async () => {
    const { bootstrap } = await codeFlowClient();
    await assert.rejects(
      bootstrap.signIn({
        opener: async (url) => {
          const back = new URL(new URL(url).searchParams.get("redirect_uri"));
          back.search = new URLSearchParams({ error: "access_denied", state: new URL(url).searchParams.get("state") }).toString();
          assert.equal((await fetch(back)).status, 200);
        },
      }),
      (error) => error.name === "SignInFailed" && error.errorCode === "sign_in_denied",
    );
  });
});
