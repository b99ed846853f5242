import { operatingSystem, type ProxyConfig } from "./config.js";
import {
  EnrollmentRefused,
  GatewayRefused,
  GatewayUnreachable,
  ProxyClientError,
  RefreshRejected,
  SignInFailed,
  TokenRejected,
  UnexpectedResponse,
} from "./errors.js";
import { grantFromResponse, type TokenGrant } from "./grant.js";

export type Fetch = typeof fetch;

export interface BootstrapAnswer {
  grant: TokenGrant;
  /** Set when the gateway generated the device secret (the client sends its own, so rarely). */
  generatedSecret: string | null;
}

/**
 * What POST /auth/oidc/start answers: for the device grant, what the person must see; for the code
 * flow (a provider without the device grant), the provider's sign-in page to open, which comes back
 * to the loopback listener.
 */
export type SignInStart =
  | {
      sign_in: string;
      flow: "device";
      verification_uri: string;
      verification_uri_complete: string;
      user_code: string;
      interval: number;
      expires_in: number;
    }
  | { sign_in: string; flow: "pkce"; authorization_url: string; expires_in: number };

/** POST /auth/oidc/poll: the grant once approved, else how long to wait before polling again. */
export type SignInPoll = BootstrapAnswer | { waitMs: number };

/**
 * The gateway's client endpoints on the wire: POST /bootstrap, POST {proxy_base_url}/refresh,
 * GET {proxy_base_url}/device, GET /healthz, and a person's sign-in (POST /auth/oidc/start, /poll). Transport failures and the error envelope become the
 * types in errors.ts here and nowhere else.
 */
export class GatewayApi {
  constructor(
    private readonly config: ProxyConfig,
    private readonly fetchImpl: Fetch,
    private readonly clock: () => number,
  ) {}

  async bootstrap(deviceId: string, deviceSecret: string): Promise<BootstrapAnswer> {
    const description = { device_name: this.config.deviceName, app_name: this.config.appName, os: operatingSystem() };
    const body = {
      device_id: deviceId,
      app_version: this.config.appVersion,
      device_secret: deviceSecret,
      ...Object.fromEntries(Object.entries(description).filter(([, value]) => value)),
    };
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.config.bootstrapSecret) headers["x-bootstrap-secret"] = this.config.bootstrapSecret;
    const response = await this.send(this.config.bootstrapUrl, { method: "POST", headers, body: JSON.stringify(body) });
    if (response.status !== 200) throw await refusal(response, EnrollmentRefused, `enroll device ${deviceId}`);
    const data = await readJson(response);
    const secret = (data as Record<string, unknown>).device_secret;
    return { grant: grantFromResponse(data, this.clock()), generatedSecret: typeof secret === "string" ? secret : null };
  }

  /** The gateway picks the device grant where the provider offers it, else the code flow to `redirectUri`. */
  async signInStart(deviceId: string, deviceSecret: string, redirectUri: string): Promise<SignInStart> {
    const body = {
      device_id: deviceId,
      app_version: this.config.appVersion,
      device_secret: deviceSecret,
      redirect_uri: redirectUri,
      ...this.description(),
    };
    const response = await this.post(`${gatewayRoot(this.config.bootstrapUrl)}/auth/oidc/start`, body);
    if (response.status !== 200) throw await refusal(response, SignInFailed, "start a sign-in");
    return (await readJson(response)) as SignInStart;
  }

  /** For the code flow, with the loopback redirect's `code` and `state`. */
  async signInPoll(handle: string, redirect?: { code: string; state: string }): Promise<SignInPoll> {
    const response = await this.post(`${gatewayRoot(this.config.bootstrapUrl)}/auth/oidc/poll`, { sign_in: handle, ...redirect });
    if (response.status === 202) {
      const interval = (await readJson(response) as { interval?: unknown }).interval;
      return { waitMs: (typeof interval === "number" ? interval : 5) * 1000 };
    }
    if (response.status !== 200) throw await refusal(response, SignInFailed, "finish the sign-in");
    const data = await readJson(response);
    const secret = (data as Record<string, unknown>).device_secret;
    return { grant: grantFromResponse(data, this.clock()), generatedSecret: typeof secret === "string" ? secret : null };
  }

  private description(): Record<string, string> {
    const description = { device_name: this.config.deviceName, app_name: this.config.appName, os: operatingSystem() };
    return Object.fromEntries(Object.entries(description).filter(([, value]) => value)) as Record<string, string>;
  }

  private post(url: string, body: unknown): Promise<Response> {
    return this.send(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  }

  async refresh(grant: TokenGrant): Promise<TokenGrant> {
    const response = await this.send(`${grant.proxyBaseUrl}/refresh`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: grant.refreshToken }),
    });
    if (response.status !== 200) throw await refusal(response, RefreshRejected, "refresh the token");
    return grantFromResponse(await readJson(response), this.clock());
  }

  async deviceStatus(grant: TokenGrant): Promise<DeviceReport> {
    const response = await this.send(`${grant.proxyBaseUrl}/device`, { headers: { authorization: `Bearer ${grant.wrapperToken}` } });
    if (response.status !== 200) throw await refusal(response, TokenRejected, "report this device's status");
    return (await readJson(response)) as DeviceReport;
  }

  async checkHealth(): Promise<void> {
    const response = await this.send(this.config.healthUrl, {});
    const body = response.status === 200 ? await readJson(response).catch(() => null) : null;
    if ((body as Record<string, unknown> | null)?.status !== "ok") {
      throw new GatewayUnreachable(`The gateway at ${this.config.healthUrl} is not healthy (HTTP ${response.status}).`);
    }
  }

  private async send(url: string, init: RequestInit): Promise<Response> {
    const origin = new URL(url).origin;
    let response: Response;
    try {
      response = await this.fetchImpl(url, { ...init, signal: AbortSignal.timeout(this.config.requestTimeoutMs) });
    } catch (error) {
      throw new GatewayUnreachable(`Cannot reach the gateway at ${origin} (${(error as Error).message}).`, { cause: error });
    }
    if (response.status >= 500) {
      throw new GatewayUnreachable(`The gateway at ${origin} failed with HTTP ${response.status} (${(await envelope(response))?.message ?? "no details"}).`);
    }
    return response;
  }
}

export interface SpendPeriod {
  spent_usd: string;
  in_flight_usd: string;
  cap_usd: string | null;
  resets_at: string;
}

/** GET /device: the gateway's view of this device. */
export interface DeviceReport {
  device_id: string;
  status: string;
  device_name: string;
  app_name: string;
  app_version: string;
  os: string;
  organization: string | null;
  token_expires_at: string;
  policy: {
    requests_per_window: number;
    window_ms: number;
    tokens_per_minute: number;
    allowed_models: string[];
    device_daily_cap_usd: string | null;
    device_monthly_cap_usd: string | null;
    org_daily_cap_usd: string | null;
    org_monthly_cap_usd: string | null;
  };
  spend: { day: SpendPeriod; month: SpendPeriod };
  organization_spend?: { day: SpendPeriod; month: SpendPeriod };
}

/** The gateway's root, where its /auth routes are: the bootstrap URL without /bootstrap. */
export function gatewayRoot(bootstrapUrl: string): string {
  return bootstrapUrl.endsWith("/bootstrap") ? bootstrapUrl.slice(0, -"/bootstrap".length) : new URL(bootstrapUrl).origin;
}

async function readJson(response: Response): Promise<unknown> {
  const text = await response.text();
  try {
    const body: unknown = JSON.parse(text);
    if (body !== null && typeof body === "object" && !Array.isArray(body)) return body;
  } catch {
    // reported below
  }
  throw new UnexpectedResponse(`The gateway answered HTTP ${response.status} with a body that is not a JSON object.`);
}

interface Envelope {
  type?: string;
  message?: string;
  details?: { error_code?: string };
}

async function envelope(response: Response): Promise<Envelope | null> {
  try {
    const error = ((await readJson(response)) as { error?: Envelope }).error;
    return error !== null && typeof error === "object" ? error : null;
  } catch {
    return null;
  }
}

/** The typed error for a 4xx: `refused` with the envelope's error code and message. */
export async function refusal(
  response: Response,
  refused: new (message: string, init: { status: number; errorCode: string; retryAfterSeconds?: number | null }) => GatewayRefused,
  subject: string,
): Promise<ProxyClientError> {
  const error = await envelope(response);
  if (error === null) return new UnexpectedResponse(`The gateway answered HTTP ${response.status} without its error envelope.`);
  const code = String(error.details?.error_code ?? error.type ?? "unknown");
  const retryAfter = Number(response.headers.get("retry-after"));
  return new refused(`The gateway refused to ${subject}: ${error.message ?? "no message"} (${code}, HTTP ${response.status}).`, {
    status: response.status,
    errorCode: code,
    retryAfterSeconds: Number.isFinite(retryAfter) && response.headers.has("retry-after") ? retryAfter : null,
  });
}
