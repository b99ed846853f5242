/**
 * The seed's background refresh service: checks the token every 30 minutes, refreshes when less
 * than an hour remains (ProxyBootstrap.renew falls back to bootstrap when the refresh is refused),
 * and after a failure retries with exponential backoff and jitter, so a fleet that lost the gateway
 * does not come back in one wave. Timers are unref'd: the service never keeps a process alive.
 */
import type { ProxyBootstrap } from "./proxy-bootstrap.js";

export interface RefreshServiceOptions {
  checkIntervalMs?: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** [0, 1); injectable so tests can pin the jitter. */
  random?: () => number;
  /** Told about each failed renewal (the service keeps trying); the default logs a warning. */
  onError?: (error: unknown, retryInMs: number) => void;
}

/**
 * The wait before retry number `failures` (1, 2, ...): `initial` doubled each time up to `max`,
 * then "equal jitter": between half of it and all of it.
 */
export function backoffDelayMs(failures: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.max(0, failures - 1));
  return ceiling / 2 + random() * (ceiling / 2);
}

export class ProxyRefreshService {
  private readonly checkIntervalMs: number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly random: () => number;
  private readonly onError: (error: unknown, retryInMs: number) => void;
  private timer: NodeJS.Timeout | null = null;
  private failures = 0;
  private running = false;

  constructor(
    private readonly session: ProxyBootstrap,
    options: RefreshServiceOptions = {},
  ) {
    this.checkIntervalMs = options.checkIntervalMs ?? 30 * 60 * 1000;
    this.retryInitialMs = options.retryInitialMs ?? 5_000;
    this.retryMaxMs = options.retryMaxMs ?? 5 * 60 * 1000;
    this.random = options.random ?? Math.random;
    this.onError =
      options.onError ??
      ((error, retryInMs) => console.warn(`proxy token refresh failed (${(error as Error).message}); retrying in ${Math.round(retryInMs / 1000)} s`));
  }

  get isRunning(): boolean {
    return this.running;
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule(Math.min(this.checkIntervalMs, Math.max(0, this.session.msUntilRefresh())));
  }

  stop(): void {
    this.running = false;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** One check: renew when due. Returns the delay until the next check. */
  async check(): Promise<number> {
    try {
      if (this.session.msUntilRefresh() <= 0) await this.session.renew();
      this.failures = 0;
      return Math.min(this.checkIntervalMs, Math.max(0, this.session.msUntilRefresh()));
    } catch (error) {
      this.failures += 1;
      const delay = backoffDelayMs(this.failures, this.retryInitialMs, this.retryMaxMs, this.random);
      const retryAfterMs = ((error as { retryAfterSeconds?: number | null }).retryAfterSeconds ?? 0) * 1000;
      const wait = Math.max(delay, retryAfterMs);
      this.onError(error, wait);
      return wait;
    }
  }

  private schedule(delayMs: number): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      void this.check().then((next) => this.schedule(next));
    }, delayMs);
    this.timer.unref();
  }
}
