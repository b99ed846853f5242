export { createAnthropicClient, tokenFetch, type GatewayClientOptions } from "./anthropic.js";
export {
  cleanDescription,
  configFromEnvironment,
  healthUrlFor,
  hostDeviceName,
  operatingSystem,
  resolveConfig,
  type ProxyConfig,
  type ProxyConfigInput,
} from "./config.js";
export {
  ConfigurationError,
  EnrollmentRefused,
  GatewayRefused,
  GatewayUnreachable,
  ProxyClientError,
  RefreshRejected,
  SignInFailed,
  StateUnavailable,
  TokenRejected,
  UnexpectedResponse,
} from "./errors.js";
export { refreshDueInMs, type TokenGrant } from "./grant.js";
export { ProxyBootstrap, type ProxyBootstrapOptions, type TokenSource } from "./proxy-bootstrap.js";
export { openSystemBrowser, type SignInOptions, type SignInPrompt } from "./sign-in.js";
export { backoffDelayMs, ProxyRefreshService, type RefreshServiceOptions } from "./proxy-refresh-service.js";
export {
  defaultKeyProvider,
  defaultStateDir,
  defaultTokenStore,
  EncryptedFileTokenStore,
  KeychainKeyProvider,
  KeyFileProvider,
  SafeStorageTokenStore,
  type CommandRunner,
  type KeyProvider,
  type SafeStorageLike,
  type StoredState,
  type TokenStore,
} from "./token-store.js";
export type { DeviceReport, Fetch, SpendPeriod } from "./wire.js";
