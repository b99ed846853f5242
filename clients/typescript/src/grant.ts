import { UnexpectedResponse } from "./errors.js";

/** One wrapper/refresh token pair as the gateway issued it; times are epoch milliseconds. */
export interface TokenGrant {
  wrapperToken: string;
  refreshToken: string;
  proxyBaseUrl: string;
  expiresAt: number;
  refreshExpiresAt: number | null;
  receivedAt: number;
}

export function grantFromResponse(body: unknown, receivedAt: number): TokenGrant {
  const data = body as Record<string, unknown>;
  const text = (name: string): string => {
    const value = data?.[name];
    if (typeof value !== "string" || !value) throw new UnexpectedResponse(`The gateway's token answer has no ${name}.`);
    return value;
  };
  const expiresAt = Date.parse(text("expires_at"));
  if (Number.isNaN(expiresAt)) throw new UnexpectedResponse("The gateway's expires_at is not a timestamp.");
  const refreshRaw = data.refresh_expires_at;
  const refreshExpiresAt = typeof refreshRaw === "string" ? Date.parse(refreshRaw) : NaN;
  return {
    wrapperToken: text("wrapper_token"),
    refreshToken: text("refresh_token"),
    proxyBaseUrl: text("proxy_base_url").replace(/\/+$/, ""),
    expiresAt,
    refreshExpiresAt: Number.isNaN(refreshExpiresAt) ? null : refreshExpiresAt,
    receivedAt,
  };
}

/**
 * How long before expiry to refresh: the seed's hour, or half the lifetime of a token that lives
 * less than two hours (else a short-lived token would be renewed on every check).
 */
export function refreshLeadMs(grant: TokenGrant, marginMs: number): number {
  return Math.min(marginMs, Math.max(0, grant.expiresAt - grant.receivedAt) / 2);
}

/** Milliseconds until a refresh is due; zero or less means now. */
export function refreshDueInMs(grant: TokenGrant, now: number, marginMs: number): number {
  return grant.expiresAt - now - refreshLeadMs(grant, marginMs);
}

export function refreshTokenUsable(grant: TokenGrant, now: number): boolean {
  return grant.refreshExpiresAt === null || grant.refreshExpiresAt > now;
}
