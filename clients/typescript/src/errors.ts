/**
 * What can go wrong on the desktop side, as types an app can act on (the Python client's tree):
 *
 *   ProxyClientError                 base; `hint` says what to do
 *   ├── ConfigurationError           a malformed URL, an app version out of bounds
 *   ├── StateUnavailable             the key that encrypts the token store cannot be read
 *   ├── GatewayUnreachable           connection refused, DNS, timeout, gateway 5xx: worth retrying
 *   ├── UnexpectedResponse           the gateway answered something this client cannot read
 *   └── GatewayRefused               the gateway said no; `errorCode` from its envelope
 *       ├── TokenRejected            a wrapper token was refused (expired, revoked, forged)
 *       ├── RefreshRejected          a refresh token was refused: bootstrap again
 *       ├── EnrollmentRefused        bootstrap was refused: blocked, pending approval, bad secret,
 *       │                            or sign_in_required (this device enrolls by its person's sign-in)
 *       └── SignInFailed             a sign-in did not finish: sign_in_denied, sign_in_expired, person_blocked
 */
export class ProxyClientError extends Error {
  readonly hint: string;

  constructor(message: string, hint = "", options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.hint = hint;
  }
}

export class ConfigurationError extends ProxyClientError {}

export class StateUnavailable extends ProxyClientError {}

export class GatewayUnreachable extends ProxyClientError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "Check that the gateway is running (curl its /healthz) and that the bootstrap URL points at it.", options);
  }
}

export class UnexpectedResponse extends ProxyClientError {}

export class GatewayRefused extends ProxyClientError {
  readonly status: number;
  readonly errorCode: string;
  readonly retryAfterSeconds: number | null;

  constructor(message: string, init: { status: number; errorCode: string; retryAfterSeconds?: number | null; hint?: string }) {
    super(message, init.hint ?? "");
    this.status = init.status;
    this.errorCode = init.errorCode;
    this.retryAfterSeconds = init.retryAfterSeconds ?? null;
  }
}

export class TokenRejected extends GatewayRefused {}

export class RefreshRejected extends GatewayRefused {}

export class EnrollmentRefused extends GatewayRefused {}

export class SignInFailed extends GatewayRefused {}

/** The gateway enrolls this device only by signing its person in (ENROLLMENT_MODE=oidc). */
export function isSignInRequired(error: unknown): boolean {
  return error instanceof EnrollmentRefused && error.errorCode === "sign_in_required";
}

/** 401 codes that mean "this token is stale": renewing can help. Others (forged, blocked) cannot. */
export const RENEWABLE_ERROR_CODES: ReadonlySet<string> = new Set(["token_expired", "token_revoked"]);

/** Refusals that bootstrap would meet as well: falling back cannot help, backing off can. */
export function isWorthABootstrap(error: unknown): boolean {
  return error instanceof GatewayRefused && error.errorCode !== "enrollment_rate_limited";
}
