/**
 * Credentials as the stores consume them.
 *
 * A `CredentialSource` owns one background refresher per mount. Stores call
 * `current()` when they sign or authorize a request: it resolves at once while
 * the held credentials are valid and waits for an exchange only when they have
 * actually expired. `invalidate()` is for a storage answer that says the
 * credentials were rejected: it starts one immediate exchange shared by every
 * caller.
 */

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  expiration: Date;
}

export interface GcpAccessToken {
  accessToken: string;
  expiration: Date;
}

export interface CredentialState {
  /** Expiry of the credentials currently held, if any. */
  expiration?: Date;
  lastRenewal?: Date;
  /** Consecutive failed exchanges since the last success. */
  consecutiveFailures: number;
  totalRenewals: number;
  totalFailures: number;
  lastError?: string;
  /** Which step of the flow failed last, such as `sts` or `token-file`. */
  lastFailedStep?: string;
}

export interface CredentialSource<T> {
  /** Performs the first exchange; rejects with a `CredentialError` when it fails. */
  start(): Promise<void>;
  current(signal?: AbortSignal): Promise<T>;
  invalidate(reason: string): Promise<T>;
  state(): CredentialState;
  /** Stops the background refresher; idempotent. */
  stop(): void;
}
