// The encrypted token stores and their keys: AES-256-GCM files with mode 0600, the keychain where
// reachable else a key file, and the Electron safeStorage adapter.
import assert from "node:assert/strict";
import { mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import {
  defaultKeyProvider,
  defaultTokenStore,
  EncryptedFileTokenStore,
  KeychainKeyProvider,
  KeyFileProvider,
  SafeStorageTokenStore,
  StateUnavailable,
} from "../dist/esm/index.js";

const STATE = {
  deviceId: "6f1c2d3e-0000-4000-8000-000000000001",
  deviceSecret: "device-secret-that-must-stay-private",
  grant: { wrapperToken: "wrapper.jwt.token", refreshToken: "refresh.jwt.token", proxyBaseUrl: "http://gw", expiresAt: 2, refreshExpiresAt: 3, receivedAt: 1 },
};

const tempDir = () => mkdtemp(join(tmpdir(), "proxy-store-"));

test("encrypted file store round-trips, hides the secrets and is private to the user", async () => {
  const dir = await tempDir();
  const store = await defaultTokenStore(dir, { useKeychain: false });
  await store.save(STATE);
  assert.deepEqual(await store.load(), STATE);
  const raw = await readFile(join(dir, "proxy-state.enc"));
  assert.equal(raw.subarray(0, 4).toString(), "PXT1");
  for (const secret of [STATE.deviceSecret, STATE.grant.wrapperToken, STATE.deviceId]) assert.equal(raw.includes(secret), false);
  assert.equal((await stat(join(dir, "proxy-state.enc"))).mode & 0o777, 0o600);
  assert.equal((await stat(join(dir, "state.key"))).mode & 0o777, 0o600);
});

test("a tampered store reads as no state", async () => {
  const dir = await tempDir();
  const store = new EncryptedFileTokenStore(join(dir, "s.enc"), new KeyFileProvider(join(dir, "k")));
  await store.save(STATE);
  const raw = await readFile(join(dir, "s.enc"));
  raw[raw.length - 20] ^= 1;
  await writeFile(join(dir, "s.enc"), raw);
  assert.equal(await store.load(), null);
});

test("a store read with another key reads as no state", async () => {
  const dir = await tempDir();
  await new EncryptedFileTokenStore(join(dir, "s.enc"), new KeyFileProvider(join(dir, "k1"))).save(STATE);
  assert.equal(await new EncryptedFileTokenStore(join(dir, "s.enc"), new KeyFileProvider(join(dir, "k2"))).load(), null);
});

/** A keychain as `security`/`secret-tool` behave: exit 44/1 when the item is missing. */
function fakeKeychain() {
  const items = new Map();
  const calls = [];
  const run = async (command, args, input) => {
    calls.push([command, args[0]]);
    const account = args[args.indexOf("account") + 1] ?? args[args.indexOf("-a") + 1];
    if (args[0] === "lookup" || args[0] === "find-generic-password") {
      if (!items.has(account)) throw Object.assign(new Error("not found"), { code: command === "security" ? 44 : 1 });
      return items.get(account) + "\n";
    }
    items.set(account, input ?? args[args.indexOf("-w") + 1]);
    return "";
  };
  return { run, items, calls };
}

test("the key lives in the keychain where one is reachable, and the secret goes through stdin", async () => {
  const dir = await tempDir();
  const keychain = fakeKeychain();
  const provider = await defaultKeyProvider(dir, { run: keychain.run, os: "linux" });
  assert.ok(provider instanceof KeychainKeyProvider);
  const key = await provider.key();
  assert.equal(key.length, 32);
  assert.deepEqual(keychain.calls, [["secret-tool", "lookup"], ["secret-tool", "store"]]);
  const again = await defaultKeyProvider(dir, { run: keychain.run, os: "linux" });
  assert.deepEqual(await again.key(), key);
  await assert.rejects(stat(join(dir, "state.key")), { code: "ENOENT" });
});

test("without a reachable keychain the key is a 0600 file", async () => {
  const dir = await tempDir();
  const unreachable = async () => {
    throw Object.assign(new Error("secret-tool: not found"), { code: "ENOENT" });
  };
  const provider = await defaultKeyProvider(dir, { run: unreachable, os: "linux" });
  assert.ok(provider instanceof KeyFileProvider);
  assert.equal((await provider.key()).length, 32);
  assert.equal((await stat(join(dir, "state.key"))).mode & 0o777, 0o600);
});

test("a keychain that held the key and is locked later is reported, not replaced", async () => {
  const dir = await tempDir();
  const keychain = fakeKeychain();
  await (await defaultKeyProvider(dir, { run: keychain.run, os: "darwin" })).key();
  const locked = async () => {
    throw Object.assign(new Error("User interaction is not allowed."), { code: 36 });
  };
  await assert.rejects(defaultKeyProvider(dir, { run: locked, os: "darwin" }), StateUnavailable);
});

test("the safeStorage adapter stores what Electron encrypts", async () => {
  const dir = await tempDir();
  const safeStorage = {
    isEncryptionAvailable: () => true,
    encryptString: (text) => Buffer.from(text, "utf8").map((byte) => byte ^ 0x5a),
    decryptString: (buffer) => Buffer.from(buffer).map((byte) => byte ^ 0x5a).toString("utf8"),
  };
  const store = new SafeStorageTokenStore(safeStorage, join(dir, "state.bin"));
  await store.save(STATE);
  assert.deepEqual(await store.load(), STATE);
  assert.equal((await readFile(join(dir, "state.bin"))).includes(STATE.deviceSecret), false);
  assert.equal((await stat(join(dir, "state.bin"))).mode & 0o777, 0o600);
  const unavailable = new SafeStorageTokenStore({ ...safeStorage, isEncryptionAvailable: () => false }, join(dir, "other.bin"));
  await assert.rejects(unavailable.save(STATE), StateUnavailable);
});
