/**
 * A person's sign-in on this device, for gateways that enroll devices that way (ENROLLMENT_MODE=oidc).
 * The gateway talks to the company's identity provider and picks the flow:
 *
 * - the device grant (RFC 8628), where the provider offers it: the app shows the URL and code, opens
 *   the system browser there, and polls the gateway until the person approved;
 * - the authorization code flow with PKCE (RFC 7636) and a loopback redirect (RFC 8252), where it
 *   does not: the client listens on 127.0.0.1 (loopback.ts), opens the provider's sign-in page, and
 *   hands the code and state the browser brings back to the gateway, which holds the PKCE verifier.
 *
 * The opener is injectable: an Electron app passes `shell.openExternal`; the default starts the
 * platform's own opener (open, xdg-open, start); tests fetch the URL.
 */
import { spawn } from "node:child_process";

import { SignInFailed } from "./errors.js";
import { LoopbackListener, stateOf } from "./loopback.js";
import type { BootstrapAnswer, GatewayApi, SignInStart } from "./wire.js";

export interface SignInPrompt {
  /** Where to sign in: the verification page, or the provider's sign-in page in the code flow. */
  verificationUri: string;
  /** The same page with the code filled in: what the browser opens. */
  verificationUriComplete: string;
  /** The code to enter; empty in the code flow, which needs none. */
  userCode: string;
  expiresInMs: number;
}

export interface SignInOptions {
  /** Opens the URL in the system browser. */
  opener?: (url: string) => unknown;
  /** Shows the URL and code to the person (a dialog, a notification); the browser may not open. */
  onPrompt?: (prompt: SignInPrompt) => void;
  /** Waits between polls; the default is a timer. */
  sleep?: (ms: number) => Promise<void>;
  /** Gives up sooner than the gateway's expiry (milliseconds): an app that cannot wait that long. */
  timeoutMs?: number;
}

export function openSystemBrowser(url: string): void {
  const [command, args] =
    process.platform === "darwin" ? ["open", [url]] : process.platform === "win32" ? ["cmd", ["/c", "start", "", url]] : ["xdg-open", [url]];
  spawn(command, args, { detached: true, stdio: "ignore" }).on("error", () => undefined).unref();
}

const notInTime = (): SignInFailed =>
  new SignInFailed("The sign-in was not approved in time.", { status: 400, errorCode: "sign_in_expired" });

export async function runSignIn(
  api: GatewayApi,
  deviceId: string,
  deviceSecret: string,
  options: SignInOptions,
  clock: () => number,
): Promise<BootstrapAnswer> {
  const listener = await LoopbackListener.start();
  try {
    const started = await api.signInStart(deviceId, deviceSecret, listener.redirectUri);
    const waitMs = Math.min(started.expires_in * 1000, options.timeoutMs ?? Infinity);
    return started.flow === "pkce"
      ? await signInByCode(api, started, listener, options, waitMs)
      : await signInByDeviceGrant(api, started, options, clock() + waitMs, clock);
  } finally {
    await listener.close();
  }
}

async function present(prompt: SignInPrompt, options: SignInOptions): Promise<void> {
  options.onPrompt?.(prompt);
  try {
    await (options.opener ?? openSystemBrowser)(prompt.verificationUriComplete);
  } catch {
    // no browser here: the prompt shown above is the way
  }
}

async function signInByCode(
  api: GatewayApi,
  started: Extract<SignInStart, { flow: "pkce" }>,
  listener: LoopbackListener,
  options: SignInOptions,
  waitMs: number,
): Promise<BootstrapAnswer> {
  listener.expectState(stateOf(started.authorization_url));
  const url = started.authorization_url;
  // Not awaited: an opener that never settles must not outlast the wait for the redirect.
  present({ verificationUri: url, verificationUriComplete: url, userCode: "", expiresInMs: started.expires_in * 1000 }, options).catch(
    () => undefined,
  );
  const redirect = await listener.waitForRedirect(waitMs);
  if (redirect === null) throw notInTime();
  if (redirect.error !== undefined || redirect.code === undefined || redirect.state === undefined) {
    const error = redirect.error ?? "no code";
    const errorCode = error === "access_denied" ? "sign_in_denied" : "sign_in_expired";
    throw new SignInFailed(`The identity provider did not sign the person in: ${error}.`, { status: 403, errorCode });
  }
  const polled = await api.signInPoll(started.sign_in, { code: redirect.code, state: redirect.state });
  if ("waitMs" in polled) throw new SignInFailed("The gateway answered a finished sign-in as pending.", { status: 202, errorCode: "sign_in_pending" });
  return polled;
}

async function signInByDeviceGrant(
  api: GatewayApi,
  started: Extract<SignInStart, { flow: "device" }>,
  options: SignInOptions,
  deadline: number,
  clock: () => number,
): Promise<BootstrapAnswer> {
  await present(
    {
      verificationUri: started.verification_uri,
      verificationUriComplete: started.verification_uri_complete || started.verification_uri,
      userCode: started.user_code,
      expiresInMs: started.expires_in * 1000,
    },
    options,
  );
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  for (;;) {
    let waitMs: number;
    try {
      const polled = await api.signInPoll(started.sign_in);
      if (!("waitMs" in polled)) return polled;
      waitMs = polled.waitMs;
    } catch (error) {
      // The gateway limits polls per sign-in: the sign-in goes on once it allows another.
      if (!(error instanceof SignInFailed) || error.errorCode !== "enrollment_rate_limited") throw error;
      waitMs = (error.retryAfterSeconds ?? 5) * 1000;
    }
    if (clock() + waitMs > deadline) throw notInTime();
    await sleep(waitMs);
  }
}
