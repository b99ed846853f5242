/**
 * A person's sign-in on this device, for gateways that enroll devices that way (ENROLLMENT_MODE=oidc):
 * the gateway starts an OAuth device grant with the company's identity provider, the app shows the
 * URL and code and opens the system browser there, and the client polls until the person approved.
 *
 * The opener is injectable: an Electron app passes `shell.openExternal`; the default starts the
 * platform's own opener (open, xdg-open, start); tests fetch the URL.
 */
import { spawn } from "node:child_process";

import { SignInFailed } from "./errors.js";
import type { GatewayApi, BootstrapAnswer } from "./wire.js";

export interface SignInPrompt {
  verificationUri: string;
  /** The same page with the code filled in: what the browser opens. */
  verificationUriComplete: string;
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
}

export function openSystemBrowser(url: string): void {
  const [command, args] =
    process.platform === "darwin" ? ["open", [url]] : process.platform === "win32" ? ["cmd", ["/c", "start", "", url]] : ["xdg-open", [url]];
  spawn(command, args, { detached: true, stdio: "ignore" }).on("error", () => undefined).unref();
}

export async function runDeviceSignIn(
  api: GatewayApi,
  deviceId: string,
  deviceSecret: string,
  options: SignInOptions,
  clock: () => number,
): Promise<BootstrapAnswer> {
  const started = await api.signInStart(deviceId, deviceSecret);
  const prompt: SignInPrompt = {
    verificationUri: started.verification_uri,
    verificationUriComplete: started.verification_uri_complete || started.verification_uri,
    userCode: started.user_code,
    expiresInMs: started.expires_in * 1000,
  };
  options.onPrompt?.(prompt);
  try {
    await (options.opener ?? openSystemBrowser)(prompt.verificationUriComplete);
  } catch {
    // no browser here: the prompt shown above is the way
  }
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const deadline = clock() + prompt.expiresInMs;
  for (;;) {
    const polled = await api.signInPoll(started.sign_in);
    if (!("waitMs" in polled)) return polled;
    if (clock() + polled.waitMs > deadline) {
      throw new SignInFailed("The sign-in was not approved in time.", { status: 400, errorCode: "sign_in_expired" });
    }
    await sleep(polled.waitMs);
  }
}
