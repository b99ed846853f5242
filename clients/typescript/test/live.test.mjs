// Against a live platform: the gateway (and its fake upstream) that tests/proxyclient/test_typescript.py
// starts and names in PROXY_TEST_GATEWAY_URL (24 h tokens) and PROXY_TEST_SHORT_GATEWAY_URL
// (3.6 s tokens). Run `npm test` through that pytest test, or set both URLs yourself.
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";

import Anthropic from "@anthropic-ai/sdk";

import { createAnthropicClient, defaultTokenStore, operatingSystem, ProxyBootstrap, ProxyRefreshService } from "../dist/esm/index.js";

const GATEWAY = process.env.PROXY_TEST_GATEWAY_URL;
const SHORT_GATEWAY = process.env.PROXY_TEST_SHORT_GATEWAY_URL;
const live = { skip: GATEWAY && SHORT_GATEWAY ? false : "no live platform: run through tests/proxyclient/test_typescript.py" };
const HOUR = 3_600_000;

async function session(gatewayUrl, { clock = Date.now, fetchImpl = fetch, dir } = {}) {
  const stateDir = dir ?? (await mkdtemp(join(tmpdir(), "proxy-live-")));
  const sources = [];
  const bootstrap = new ProxyBootstrap(
    { bootstrapUrl: `${gatewayUrl}/bootstrap`, appVersion: "7.0.1", appName: "Scribe", deviceName: "ts-test-laptop" },
    { store: await defaultTokenStore(stateDir, { useKeychain: false }), clock, fetch: fetchImpl, onRenewed: (source) => sources.push(source) },
  );
  return { bootstrap, sources, stateDir };
}

async function pollUntil(condition, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return true;
}

describe("live platform", live, () => {
  test("bootstrap enrolls once with a description; a relaunch keeps the device and its token", async () => {
    const first = await session(GATEWAY);
    const token = await first.bootstrap.token();
    assert.equal(token.split(".").length, 3);
    const report = await first.bootstrap.deviceStatus();
    assert.deepEqual(
      [report.device_id, report.status, report.device_name, report.app_name, report.app_version, report.os],
      [await first.bootstrap.deviceId(), "active", "ts-test-laptop", "Scribe", "7.0.1", operatingSystem()],
    );
    const relaunch = await session(GATEWAY, { dir: first.stateDir });
    assert.equal(await relaunch.bootstrap.token(), token);
    assert.equal(await relaunch.bootstrap.deviceId(), report.device_id);
    assert.deepEqual([first.sources, relaunch.sources], [["bootstrap"], []]);
  });

  test("under an hour before expiry the token is refreshed, not bootstrapped", async () => {
    let now = Date.now();
    const { bootstrap, sources } = await session(GATEWAY, { clock: () => now });
    const first = await bootstrap.token();
    now += 23.5 * HOUR;
    const second = await bootstrap.token();
    assert.notEqual(second, first);
    assert.deepEqual(sources, ["bootstrap", "refresh"]);
  });

  test("a refused refresh falls back to bootstrap with the kept device secret", async () => {
    let now = Date.now();
    const { bootstrap, sources, stateDir } = await session(GATEWAY, { clock: () => now });
    await bootstrap.token();
    const deviceId = await bootstrap.deviceId();
    const store = await defaultTokenStore(stateDir, { useKeychain: false });
    const state = await store.load();
    state.grant.refreshToken = "not-a-refresh-token";
    await store.save(state);
    now += 23.5 * HOUR;
    await bootstrap.token();
    assert.deepEqual(sources, ["bootstrap", "bootstrap"]);
    now = Date.now();
    assert.equal((await bootstrap.deviceStatus()).device_id, deviceId);
  });

  test("concurrent renewals share one refresh in flight", async () => {
    let now = Date.now();
    let refreshCalls = 0;
    const counting = (input, init) => {
      if (String(input).endsWith("/refresh")) refreshCalls += 1;
      return fetch(input, init);
    };
    const { bootstrap } = await session(GATEWAY, { clock: () => now, fetchImpl: counting });
    await bootstrap.token();
    now += 23.5 * HOUR;
    const tokens = await Promise.all(Array.from({ length: 5 }, () => bootstrap.token()));
    assert.equal(new Set(tokens).size, 1);
    assert.equal(refreshCalls, 1);
  });

  test("the refresh service refreshes a short-lived token before it expires", async () => {
    const { bootstrap, sources } = await session(SHORT_GATEWAY);
    await bootstrap.token();
    const service = new ProxyRefreshService(bootstrap, { checkIntervalMs: 100, retryInitialMs: 50, retryMaxMs: 200 });
    service.start();
    try {
      assert.ok(await pollUntil(() => sources.includes("refresh")), `renewals: ${sources}`);
    } finally {
      service.stop();
    }
    assert.equal(sources[0], "bootstrap");
    assert.ok(sources.slice(1).every((source) => source === "refresh"), `renewals: ${sources}`);
  });

  test("the Anthropic SDK client answers through the gateway", async () => {
    const { bootstrap } = await session(GATEWAY);
    const claude = await createAnthropicClient(Anthropic, bootstrap, { maxRetries: 0 });
    const message = await claude.messages.create({
      model: "claude-sonnet-4-5", max_tokens: 64, messages: [{ role: "user", content: "Hello from the TypeScript client" }],
    });
    assert.ok(message.content[0].text.startsWith("Hello! This is the fake Anthropic API"), message.content[0].text);
  });

  test("the SDK client renews once after a 401 for a token its clock still thinks valid", async () => {
    const lagging = () => Date.now() - HOUR; // the token looks fresh here after the gateway expired it
    const { bootstrap, sources } = await session(SHORT_GATEWAY, { clock: lagging });
    const stale = await bootstrap.token();
    const claude = await createAnthropicClient(Anthropic, bootstrap, { maxRetries: 0 });
    const expired = async () => (await fetch(`${SHORT_GATEWAY}/device`, { headers: { authorization: `Bearer ${stale}` } })).status === 401;
    assert.ok(await pollUntil(expired), "the short-lived token did not expire");
    const message = await claude.messages.create({ model: "claude-sonnet-4-5", max_tokens: 16, messages: [{ role: "user", content: "again" }] });
    assert.equal(message.type, "message");
    assert.deepEqual(sources, ["bootstrap", "refresh"]);
    assert.notEqual(bootstrap.grant.wrapperToken, stale);
  });
});
