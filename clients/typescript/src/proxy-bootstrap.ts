/**
 * The seed's bootstrap client: the device id generated once, the device secret kept, and the one
 * path that renews the wrapper token: refresh when due, fall back to bootstrap when the refresh is
 * refused, and to a person's sign-in (sign-in.ts) when the gateway enrolls this device only that way
 * and the app gave `signIn` options (or calls `signIn()` itself, for a "Sign in" button).
 *
 * Every caller (the app at launch, the refresh service, the SDK before a request or after a 401)
 * goes through `renew`, which runs one renewal at a time per instance: concurrent callers share the
 * renewal in flight, so a refresh token is never sent twice (the gateway would see reuse and revoke
 * the family). Use one ProxyBootstrap per process and store.
 */
import { randomBytes, randomUUID } from "node:crypto";

import { resolveConfig, type ProxyConfig, type ProxyConfigInput } from "./config.js";
import { isSignInRequired, isWorthABootstrap, RENEWABLE_ERROR_CODES, TokenRejected } from "./errors.js";
import { refreshDueInMs, refreshTokenUsable, type TokenGrant } from "./grant.js";
import type { StoredState, TokenStore } from "./token-store.js";
import { runSignIn, type SignInOptions } from "./sign-in.js";
import { GatewayApi, type BootstrapAnswer, type DeviceReport, type Fetch } from "./wire.js";

export type TokenSource = "current" | "refresh" | "bootstrap" | "sign_in";

export interface ProxyBootstrapOptions {
  store: TokenStore;
  /** Milliseconds before expiry to refresh: the seed's hour (half the lifetime of shorter tokens). */
  refreshMarginMs?: number;
  fetch?: Fetch;
  clock?: () => number;
  /** Told about each renewal; the default says nothing. */
  onRenewed?: (source: TokenSource, grant: TokenGrant) => void;
  /** Sign the person in when the gateway asks for it (ENROLLMENT_MODE=oidc); without it, that refusal is thrown. */
  signIn?: SignInOptions;
}

export class ProxyBootstrap {
  readonly config: ProxyConfig;
  readonly refreshMarginMs: number;
  private readonly store: TokenStore;
  private readonly api: GatewayApi;
  private readonly clock: () => number;
  private readonly onRenewed: (source: TokenSource, grant: TokenGrant) => void;
  private state: StoredState | null = null;
  private inflight: Promise<TokenGrant> | null = null;
  private readonly signInOptions: SignInOptions | undefined;

  constructor(config: ProxyConfig | ProxyConfigInput, options: ProxyBootstrapOptions) {
    this.config = resolveConfig(config); // idempotent on a resolved ProxyConfig
    this.store = options.store;
    this.clock = options.clock ?? Date.now;
    this.refreshMarginMs = options.refreshMarginMs ?? 60 * 60 * 1000;
    this.api = new GatewayApi(this.config, options.fetch ?? fetch, this.clock);
    this.onRenewed = options.onRenewed ?? (() => undefined);
    this.signInOptions = options.signIn;
  }

  /** Sign the person in now, whatever token this device holds (opens the system browser by default). */
  signIn(options: SignInOptions = this.signInOptions ?? {}): Promise<TokenGrant> {
    if (this.inflight !== null) return this.inflight;
    this.inflight = this.enroll("sign_in", options).finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  get grant(): TokenGrant | null {
    return this.state?.grant ?? null;
  }

  async deviceId(): Promise<string> {
    return (await this.loadState()).deviceId;
  }

  /** A wrapper token to send now: the current one, or renewed when it is due. */
  async token(): Promise<string> {
    const grant = this.grant ?? (await this.loadState()).grant;
    if (grant !== null && this.msUntilRefresh(grant) > 0) return grant.wrapperToken;
    return (await this.renew()).wrapperToken;
  }

  /** The gateway root for ANTHROPIC_BASE_URL / the SDK's baseURL. */
  async baseUrl(): Promise<string> {
    return (this.grant ?? (await this.renew())).proxyBaseUrl;
  }

  msUntilRefresh(grant: TokenGrant | null = this.grant): number {
    return grant === null ? 0 : refreshDueInMs(grant, this.clock(), this.refreshMarginMs);
  }

  /**
   * A fresh grant: the current one if it is not due (and is not `rejectedToken`, which the gateway
   * just refused), else refreshed, else bootstrapped. One renewal in flight at a time.
   */
  renew(rejectedToken?: string): Promise<TokenGrant> {
    if (this.inflight !== null) return this.inflight;
    this.inflight = this.renewNow(rejectedToken).finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  async deviceStatus(): Promise<DeviceReport> {
    return this.withFreshGrant((grant) => this.api.deviceStatus(grant));
  }

  checkHealth(): Promise<void> {
    return this.api.checkHealth();
  }

  private async withFreshGrant<T>(call: (grant: TokenGrant) => Promise<T>): Promise<T> {
    await this.token();
    const grant = this.grant as TokenGrant;
    try {
      return await call(grant);
    } catch (error) {
      if (!(error instanceof TokenRejected) || !RENEWABLE_ERROR_CODES.has(error.errorCode)) throw error;
    }
    return call(await this.renew(grant.wrapperToken));
  }

  private async renewNow(rejectedToken: string | undefined): Promise<TokenGrant> {
    const state = await this.loadState(true);
    const current = state.grant;
    if (current !== null && current.wrapperToken !== rejectedToken && this.msUntilRefresh(current) > 0) return current;
    let grant: TokenGrant | null = null;
    if (current !== null && refreshTokenUsable(current, this.clock())) {
      try {
        grant = await this.api.refresh(current);
      } catch (error) {
        if (!isWorthABootstrap(error)) throw error;
      }
    }
    if (grant === null) {
      try {
        return await this.enroll("bootstrap");
      } catch (error) {
        if (!isSignInRequired(error) || this.signInOptions === undefined) throw error;
        return this.enroll("sign_in", this.signInOptions);
      }
    }
    return this.adopt(state, grant, "refresh");
  }

  /** Bootstrap, or a person's sign-in, with the device secret kept before the gateway learns it. */
  private async enroll(source: "bootstrap" | "sign_in", options?: SignInOptions): Promise<TokenGrant> {
    const state = await this.loadState(true);
    state.deviceSecret ??= randomBytes(32).toString("base64url");
    await this.store.save(state);
    const answer: BootstrapAnswer =
      source === "bootstrap"
        ? await this.api.bootstrap(state.deviceId, state.deviceSecret)
        : await runSignIn(this.api, state.deviceId, state.deviceSecret, options ?? {}, this.clock);
    state.deviceSecret = answer.generatedSecret ?? state.deviceSecret;
    return this.adopt(state, answer.grant, source);
  }

  private async adopt(state: StoredState, grant: TokenGrant, source: TokenSource): Promise<TokenGrant> {
    state.grant = grant;
    await this.store.save(state);
    this.onRenewed(source, grant);
    return grant;
  }

  /** The stored state (re-read when `fresh`: another process may have renewed); created on first launch. */
  private async loadState(fresh = false): Promise<StoredState> {
    if (this.state !== null && !fresh) return this.state;
    const stored = await this.store.load();
    if (stored !== null && (this.state === null || (stored.grant?.receivedAt ?? 0) >= (this.state.grant?.receivedAt ?? 0))) {
      this.state = stored;
    } else if (this.state === null) {
      this.state = { deviceId: randomUUID(), deviceSecret: null, grant: null };
      await this.store.save(this.state);
    }
    return this.state;
  }
}
