/**
 * Where the device's identity and tokens live between launches, encrypted at rest.
 *
 * A store keeps one `StoredState`: the device id (generated once), the device secret (proves this
 * is the same device when it bootstraps again) and the current token pair. Backends:
 *
 * - `EncryptedFileTokenStore`: AES-256-GCM, a fresh 12-byte nonce per write, the file's purpose as
 *   associated data, written atomically with mode 0600. Its key comes from a `KeyProvider`:
 *   `defaultKeyProvider` uses the OS keychain where one is reachable (macOS `security`, the Secret
 *   Service's `secret-tool` on Linux) and else a key file beside the store (mode 0600).
 * - `SafeStorageTokenStore`: Electron's `safeStorage` (Keychain, DPAPI, libsecret) encrypts; pass
 *   it `safeStorage` from the `electron` module in the main process.
 *
 * A file that fails authentication (tampered, or from another key) reads as no state: the client
 * enrolls again as a new device rather than trusting it.
 */
import { execFile } from "node:child_process";
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, open, readFile, rename } from "node:fs/promises";
import { homedir, platform } from "node:os";
import { dirname, join, resolve } from "node:path";
import { promisify } from "node:util";

import { StateUnavailable } from "./errors.js";
import type { TokenGrant } from "./grant.js";

export interface StoredState {
  deviceId: string;
  deviceSecret: string | null;
  grant: TokenGrant | null;
}

export interface TokenStore {
  load(): Promise<StoredState | null>;
  save(state: StoredState): Promise<void>;
}

export interface KeyProvider {
  /** 32 bytes for AES-256-GCM; the same bytes on every call and every launch. */
  key(): Promise<Buffer>;
}

const MAGIC = Buffer.from("PXT1");
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const ASSOCIATED_DATA = Buffer.from("proxyclient-ts/1|state");
const KEYCHAIN_SERVICE = "proxyclient";
const KEYCHAIN_MARKER = "state.key.in-keychain";

/** Write atomically (a crash leaves the old file or the new one) with mode 0600. */
export async function writePrivate(path: string, content: Buffer | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  const handle = await open(temporary, "wx", 0o600);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await chmod(temporary, 0o600);
  await rename(temporary, path);
}

async function readOptional(path: string): Promise<Buffer | null> {
  try {
    return await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
}

export function seal(key: Buffer, plaintext: Buffer): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(ASSOCIATED_DATA);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([MAGIC, nonce, body, cipher.getAuthTag()]);
}

/** The plaintext, or null when `sealed` is not ours or fails authentication. */
export function unseal(key: Buffer, sealed: Buffer): Buffer | null {
  if (sealed.length < MAGIC.length + NONCE_BYTES + TAG_BYTES || !sealed.subarray(0, MAGIC.length).equals(MAGIC)) return null;
  const nonce = sealed.subarray(MAGIC.length, MAGIC.length + NONCE_BYTES);
  const body = sealed.subarray(MAGIC.length + NONCE_BYTES, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key, nonce);
  decipher.setAAD(ASSOCIATED_DATA);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(body), decipher.final()]);
  } catch {
    return null;
  }
}

function parseState(plaintext: Buffer | null): StoredState | null {
  if (plaintext === null) return null;
  try {
    const state = JSON.parse(plaintext.toString("utf8")) as StoredState;
    return typeof state.deviceId === "string" && state.deviceId ? state : null;
  } catch {
    return null;
  }
}

export class EncryptedFileTokenStore implements TokenStore {
  constructor(
    readonly path: string,
    private readonly keys: KeyProvider,
  ) {}

  async load(): Promise<StoredState | null> {
    const sealed = await readOptional(this.path);
    return sealed === null ? null : parseState(unseal(await this.keys.key(), sealed));
  }

  async save(state: StoredState): Promise<void> {
    await writePrivate(this.path, seal(await this.keys.key(), Buffer.from(JSON.stringify(state))));
  }
}

/** A random key in a file only this user can read: the fallback where no keychain is reachable. */
export class KeyFileProvider implements KeyProvider {
  private cached: Promise<Buffer> | null = null;

  constructor(readonly path: string) {}

  key(): Promise<Buffer> {
    this.cached ??= this.loadOrCreate();
    return this.cached;
  }

  private async loadOrCreate(): Promise<Buffer> {
    const stored = await readOptional(this.path);
    if (stored !== null) {
      const key = Buffer.from(stored.toString("utf8").trim(), "base64");
      if (key.length === KEY_BYTES) return key;
      throw new StateUnavailable(`${this.path} does not hold a ${KEY_BYTES * 8}-bit key.`, "Delete it to enroll this computer again.");
    }
    const key = randomBytes(KEY_BYTES);
    await writePrivate(this.path, key.toString("base64") + "\n");
    return key;
  }
}

export type CommandRunner = (command: string, args: string[], input?: string) => Promise<string>;

const execFileAsync = promisify(execFile);

/** Runs a keychain command; `input` (a secret) goes to stdin, never to the command line. */
export const runCommand: CommandRunner = async (command, args, input) => {
  if (input === undefined) return (await execFileAsync(command, args, { timeout: 10_000 })).stdout;
  return new Promise((resolvePromise, reject) => {
    const child = execFile(command, args, { timeout: 10_000 }, (error, stdout) => (error ? reject(error) : resolvePromise(stdout)));
    child.stdin?.end(input);
  });
};

/**
 * The key in the OS keychain: macOS Keychain through `security`, the Secret Service (GNOME
 * Keyring, KWallet) through `secret-tool` on Linux. The account is the state directory, so two
 * stores on one machine have two keys.
 */
export class KeychainKeyProvider implements KeyProvider {
  private cached: Promise<Buffer> | null = null;

  constructor(
    private readonly account: string,
    private readonly run: CommandRunner = runCommand,
    private readonly os: NodeJS.Platform = platform(),
  ) {}

  static supported(os: NodeJS.Platform = platform()): boolean {
    return os === "darwin" || os === "linux";
  }

  key(): Promise<Buffer> {
    this.cached ??= this.loadOrCreate();
    return this.cached;
  }

  /** The stored key, or null when the keychain holds none; throws when the keychain is unreachable. */
  async read(): Promise<Buffer | null> {
    let stored: string;
    try {
      stored =
        this.os === "darwin"
          ? await this.run("security", ["find-generic-password", "-s", KEYCHAIN_SERVICE, "-a", this.account, "-w"])
          : await this.run("secret-tool", ["lookup", "service", KEYCHAIN_SERVICE, "account", this.account]);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === 44 || code === 1) return null; // `security`: item not found; `secret-tool`: no match
      throw error;
    }
    const key = Buffer.from(stored.trim(), "base64");
    return key.length === KEY_BYTES ? key : null;
  }

  async write(key: Buffer): Promise<void> {
    const encoded = key.toString("base64");
    if (this.os === "darwin") {
      await this.run("security", ["add-generic-password", "-U", "-s", KEYCHAIN_SERVICE, "-a", this.account, "-w", encoded]);
    } else {
      await this.run("secret-tool", ["store", "--label=proxyclient state key", "service", KEYCHAIN_SERVICE, "account", this.account], encoded);
    }
  }

  private async loadOrCreate(): Promise<Buffer> {
    const stored = await this.read();
    if (stored !== null) return stored;
    const key = randomBytes(KEY_BYTES);
    await this.write(key);
    return key;
  }
}

/**
 * The keychain where one is reachable, else a key file in `directory`. Decided once per directory
 * and then kept: an existing key file wins, and a marker records that the keychain holds the key,
 * so a keychain that is locked later is reported (StateUnavailable) instead of replaced by a new
 * key, which would orphan the device secret.
 */
export async function defaultKeyProvider(
  directory: string,
  options: { useKeychain?: boolean; run?: CommandRunner; os?: NodeJS.Platform } = {},
): Promise<KeyProvider> {
  const keyFile = join(directory, "state.key");
  const marker = join(directory, KEYCHAIN_MARKER);
  const os = options.os ?? platform();
  if (existsSync(keyFile) || options.useKeychain === false || !KeychainKeyProvider.supported(os)) return new KeyFileProvider(keyFile);
  const keychain = new KeychainKeyProvider(resolve(directory), options.run, os);
  try {
    await keychain.key();
  } catch (error) {
    if (existsSync(marker)) {
      throw new StateUnavailable("The OS keychain that holds this client's key cannot be read.", "Unlock the keychain and try again.");
    }
    return new KeyFileProvider(keyFile);
  }
  if (!existsSync(marker)) await writePrivate(marker, "the key of this directory's state is in the OS keychain\n");
  return keychain;
}

/** The per-user directory for the client's state (an Electron app passes app.getPath("userData")). */
export function defaultStateDir(appName = "proxyclient"): string {
  const home = homedir();
  if (platform() === "win32") return join(process.env.APPDATA || join(home, "AppData", "Roaming"), appName);
  if (platform() === "darwin") return join(home, "Library", "Application Support", appName);
  return join(process.env.XDG_CONFIG_HOME || join(home, ".config"), appName);
}

/** The default store: `proxy-state.enc` in `directory`, keyed from the keychain or a key file. */
export async function defaultTokenStore(directory: string = defaultStateDir(), options: { useKeychain?: boolean } = {}): Promise<TokenStore> {
  return new EncryptedFileTokenStore(join(directory, "proxy-state.enc"), await defaultKeyProvider(directory, options));
}

/** The part of Electron's `safeStorage` this adapter uses. */
export interface SafeStorageLike {
  isEncryptionAvailable(): boolean;
  encryptString(plainText: string): Buffer;
  decryptString(encrypted: Buffer): string;
}

export class SafeStorageTokenStore implements TokenStore {
  constructor(
    private readonly safeStorage: SafeStorageLike,
    readonly path: string,
  ) {}

  async load(): Promise<StoredState | null> {
    const sealed = await readOptional(this.path);
    if (sealed === null) return null;
    this.requireEncryption();
    try {
      return parseState(Buffer.from(this.safeStorage.decryptString(sealed), "utf8"));
    } catch {
      return null;
    }
  }

  async save(state: StoredState): Promise<void> {
    this.requireEncryption();
    await writePrivate(this.path, this.safeStorage.encryptString(JSON.stringify(state)));
  }

  private requireEncryption(): void {
    if (!this.safeStorage.isEncryptionAvailable()) {
      throw new StateUnavailable("Electron's safeStorage cannot encrypt on this system.", "Use EncryptedFileTokenStore instead.");
    }
  }
}
