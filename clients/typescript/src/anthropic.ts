/**
 * Wiring for the official `@anthropic-ai/sdk`, without importing it (this package has no runtime
 * dependency): the app passes the SDK's class.
 *
 *     import Anthropic from "@anthropic-ai/sdk";
 *     const claude = await createAnthropicClient(Anthropic, proxy);
 *
 * Every request goes through `tokenFetch`, which sets the current wrapper token (renewed when due)
 * and, when the gateway answers 401 with a stale-token code (expired, revoked), renews once and
 * sends the request again. Other refusals (forged token, blocked device) reach the SDK as they are.
 */
import { RENEWABLE_ERROR_CODES } from "./errors.js";
import type { ProxyBootstrap } from "./proxy-bootstrap.js";
import type { Fetch } from "./wire.js";

async function isRenewableRefusal(response: Response): Promise<boolean> {
  try {
    const body = (await response.clone().json()) as { error?: { details?: { error_code?: string } } };
    return RENEWABLE_ERROR_CODES.has(body.error?.details?.error_code ?? "");
  } catch {
    return false;
  }
}

function withToken(init: RequestInit | undefined, token: string): RequestInit {
  const headers = new Headers(init?.headers);
  headers.delete("x-api-key");
  headers.set("authorization", `Bearer ${token}`);
  return { ...init, headers };
}

/** A `fetch` that authenticates every request with the session's fresh token (see above). */
export function tokenFetch(session: ProxyBootstrap, baseFetch: Fetch = fetch): Fetch {
  return async (input, init) => {
    const token = await session.token();
    const response = await baseFetch(input, withToken(init, token));
    const replayable = !(init?.body instanceof ReadableStream) && !(input instanceof Request && input.bodyUsed);
    if (response.status !== 401 || !replayable || !(await isRenewableRefusal(response))) return response;
    const fresh = await session.renew(token);
    return baseFetch(input, withToken(init, fresh.wrapperToken));
  };
}

/** The SDK options this package sets; the app's own options (timeout, maxRetries...) are merged in. */
export interface GatewayClientOptions {
  baseURL: string;
  apiKey: string;
  fetch: Fetch;
}

export async function createAnthropicClient<Client, Options extends object>(
  AnthropicClass: new (options: Options & GatewayClientOptions) => Client,
  session: ProxyBootstrap,
  options: Options = {} as Options,
): Promise<Client> {
  const apiKey = await session.token();
  return new AnthropicClass({ ...options, baseURL: await session.baseUrl(), apiKey, fetch: tokenFetch(session) });
}
