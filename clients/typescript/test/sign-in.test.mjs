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
