import { hostname, platform, release } from "node:os";

import { ConfigurationError } from "./errors.js";

export interface ProxyConfig {
  /** The gateway's POST /bootstrap URL, e.g. https://gateway.example.com/bootstrap. */
  bootstrapUrl: string;
  /** GET /healthz; default: /healthz beside the bootstrap URL. */
  healthUrl: string;
  appVersion: string;
  appName: string;
  /** Sent at bootstrap so operators can tell devices apart; empty: none sent. */
  deviceName: string;
  /** Sent as X-Bootstrap-Secret when the gateway runs ENROLLMENT_MODE=secret. */
  bootstrapSecret: string;
  requestTimeoutMs: number;
}

export interface ProxyConfigInput {
  bootstrapUrl: string;
  appVersion: string;
  appName?: string;
  /** Default: this computer's host name; `null` or "" to send none. */
  deviceName?: string | null;
  healthUrl?: string;
  bootstrapSecret?: string;
  requestTimeoutMs?: number;
}

const REFUSED_CHARACTERS = /[<>"`]/g;
const DEVICE_NAME_MAX_CHARS = 100;
const OS_MAX_CHARS = 64;

/**
 * Text the gateway shows operators must be printable, free of markup and bounded; a refused
 * bootstrap would cost the user their token over a cosmetic field, so the host name and OS are
 * cleaned to what the gateway accepts (tokens/description.py).
 */
export function cleanDescription(value: string, maxChars: number): string {
  const printable = [...value.normalize("NFC")].filter((char) => !/[\p{C}\p{Zl}\p{Zp}]/u.test(char)).join("");
  return printable.replace(REFUSED_CHARACTERS, "").trim().replace(/^[=+\-@]+/, "").trim().slice(0, maxChars).trim();
}

export function hostDeviceName(): string {
  return cleanDescription(hostname().split(".")[0] ?? "", DEVICE_NAME_MAX_CHARS);
}

export function operatingSystem(): string {
  const names: Record<string, string> = { darwin: "macOS", win32: "Windows", linux: "Linux" };
  return cleanDescription(`${names[platform()] ?? platform()} ${release()}`, OS_MAX_CHARS);
}

function checkHttpUrl(name: string, url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigurationError(`${name}=${JSON.stringify(url)} is not a URL.`, `Set ${name} like http://localhost:3001/bootstrap.`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new ConfigurationError(`${name}=${JSON.stringify(url)} is not an http(s) URL.`, `Set ${name} like http://localhost:3001/bootstrap.`);
  }
}

/** `https://host/prefix/bootstrap` -> `https://host/prefix/healthz` (a gateway under a prefix). */
export function healthUrlFor(bootstrapUrl: string): string {
  const url = new URL(bootstrapUrl);
  url.pathname = url.pathname.replace(/\/[^/]*$/, "/healthz");
  url.search = "";
  return url.toString();
}

export function resolveConfig(input: ProxyConfigInput): ProxyConfig {
  checkHttpUrl("bootstrapUrl", input.bootstrapUrl);
  const healthUrl = input.healthUrl || healthUrlFor(input.bootstrapUrl);
  checkHttpUrl("healthUrl", healthUrl);
  if (!input.appVersion || input.appVersion.length > 64) {
    throw new ConfigurationError("appVersion must be 1 to 64 characters.", "Pass your app's version string.");
  }
  return {
    bootstrapUrl: input.bootstrapUrl,
    healthUrl,
    appVersion: input.appVersion,
    appName: input.appName ?? "",
    deviceName: input.deviceName === undefined ? hostDeviceName() : (input.deviceName ?? ""),
    bootstrapSecret: input.bootstrapSecret ?? "",
    requestTimeoutMs: input.requestTimeoutMs ?? 15_000,
  };
}

/**
 * The seed's variables: ENABLE_PROXY, PROXY_BOOTSTRAP_URL, PROXY_HEALTH_URL, with
 * PROXY_BOOTSTRAP_SECRET and PROXYCLIENT_DEVICE_NAME (empty: none). `null` when proxy mode is off.
 */
export function configFromEnvironment(
  app: { appVersion: string; appName?: string },
  env: Record<string, string | undefined> = process.env,
): ProxyConfig | null {
  if (!["1", "true", "yes", "on"].includes((env.ENABLE_PROXY ?? "").trim().toLowerCase())) return null;
  return resolveConfig({
    bootstrapUrl: env.PROXY_BOOTSTRAP_URL || "http://localhost:3001/bootstrap",
    healthUrl: env.PROXY_HEALTH_URL || undefined,
    bootstrapSecret: env.PROXY_BOOTSTRAP_SECRET,
    deviceName: env.PROXYCLIENT_DEVICE_NAME,
    ...app,
  });
}
