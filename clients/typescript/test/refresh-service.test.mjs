// The refresh service's schedule: exponential backoff with jitter after failures, the gateway's
// retry-after honoured, the failure count reset by a success.
import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelayMs, GatewayUnreachable, ProxyRefreshService } from "../dist/esm/index.js";

test("backoff doubles from the initial delay up to the maximum, jittered between half and all of it", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 9].map((n) => backoffDelayMs(n, 5_000, 60_000, () => 0)), [2_500, 5_000, 10_000, 20_000, 30_000, 30_000]);
  assert.deepEqual([1, 2, 3, 4, 5, 9].map((n) => backoffDelayMs(n, 5_000, 60_000, () => 0.999999)).map(Math.round), [5_000, 10_000, 20_000, 40_000, 60_000, 60_000]);
});

/** A session whose renewals fail `failing` times, then succeed. */
function flakySession(failing, error = new GatewayUnreachable("down")) {
  const session = { renewals: 0, msUntilRefresh: () => (session.renewals > failing ? 600_000 : 0) };
  session.renew = async () => {
    session.renewals += 1;
    if (session.renewals <= failing) throw error;
  };
  return session;
}

test("failed checks back off with jitter, and a success returns to the normal schedule", async () => {
  const errors = [];
  const service = new ProxyRefreshService(flakySession(3), {
    checkIntervalMs: 1_800_000, retryInitialMs: 1_000, retryMaxMs: 8_000, random: () => 0.5, onError: (_, wait) => errors.push(wait),
  });
  assert.deepEqual([await service.check(), await service.check(), await service.check()], [750, 1_500, 3_000]);
  assert.equal(service.consecutiveFailures, 3);
  assert.equal(await service.check(), 600_000);
  assert.equal(service.consecutiveFailures, 0);
  assert.deepEqual(errors, [750, 1_500, 3_000]);
});

test("a refusal's retry-after is waited out even when the backoff is shorter", async () => {
  const limited = Object.assign(new GatewayUnreachable("rate limited"), { retryAfterSeconds: 42 });
  const service = new ProxyRefreshService(flakySession(1, limited), { retryInitialMs: 1_000, random: () => 0, onError: () => undefined });
  assert.equal(await service.check(), 42_000);
});

test("the service checks at most every interval and never keeps the process alive", () => {
  const session = { msUntilRefresh: () => 10 * 3_600_000, renew: async () => undefined };
  const service = new ProxyRefreshService(session, { checkIntervalMs: 1_800_000 });
  service.start();
  assert.equal(service.isRunning, true);
  service.stop();
  assert.equal(service.isRunning, false);
});
