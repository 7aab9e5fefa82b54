/**
 * A background refresher for short-lived credentials.
 *
 * Design:
 * - One exchange at a time. Every path that needs new credentials (the first
 *   exchange, the renewal timer, an expired `current()`, `invalidate()`) joins
 *   the one pending exchange promise if there is one, so N concurrent callers
 *   cause one request to the token service.
 * - Early renewal. After each successful exchange a timer fires at
 *   `renewAtFraction` (0.8 by default) of the credentials' lifetime, so a
 *   renewal has the last fifth of the lifetime (12 minutes of a one-hour
 *   credential) to succeed before anything has to wait.
 * - File operations do not wait while the credentials they hold are valid.
 *   `current()` returns the held credentials at once unless they expire
 *   within `expiryMarginMs`; only then does it wait for an exchange. The
 *   margin covers clock skew and the time a signed request spends in flight.
 * - Failures retry with exponential backoff and full jitter (a delay drawn
 *   uniformly from zero to the capped exponential bound), so that many
 *   daemons restarted together do not retry in lockstep. Failed renewals
 *   leave the held credentials in place, and they keep serving until they
 *   expire, and retries come before they expire. While credentials are
 *   expired and a retry is scheduled, `current()` starts at most one
 *   exchange per `minExpiredRetryIntervalMs` and otherwise fails at once
 *   with the last error, so a burst of file operations does not flood the
 *   token service and the mount recovers soon after the service does.
 * - `invalidate()` (a storage server rejected the credentials) starts one
 *   immediate exchange shared by all callers. Invalidations within
 *   `minInvalidateIntervalMs` of the previous exchange do not start another
 *   one, because requests signed before the renewal can still be rejected
 *   after it.
 *
 * Time comes from an injectable clock, and timers are created through it, so
 * tests drive renewals without waiting. Node.js timers are unref'd: a pending
 * renewal alone does not keep the process alive.
 */

import type { Logger } from '../observability/logger.js';
import { CredentialError, isCredentialError } from './errors.js';
import type { CredentialSource, CredentialState } from './types.js';

export interface RefresherClock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  setTimeout(callback: () => void, delayMs: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: RefresherClock = {
  now: () => Date.now(),
  setTimeout: (callback, delayMs) => setTimeout(callback, delayMs).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface RefresherOptions<T extends { expiration: Date }> {
  /** Name of the credential source in logs, such as `aws-web-identity`. */
  name: string;
  /** Performs one exchange. It should stop when `signal` aborts (timeout or `stop()`). */
  exchange: (signal: AbortSignal) => Promise<T>;
  logger: Logger;
  /** Fields of the credentials that are safe to log (never secrets), such as an access key id. */
  describe?: (credentials: T) => Record<string, unknown>;
  /** Fraction of the lifetime after which renewal starts; default 0.8. */
  renewAtFraction?: number;
  /** Credentials this close to expiry count as expired for `current()`; default 5000 ms. */
  expiryMarginMs?: number;
  /** Upper bound of the first retry delay; default 1000 ms. */
  initialRetryDelayMs?: number;
  /** Cap of the retry delay; default 60000 ms. */
  maxRetryDelayMs?: number;
  /** An exchange that takes longer is aborted and counts as failed; default 30000 ms. */
  exchangeTimeoutMs?: number;
  /** Minimum time between the end of one exchange and an exchange started by `invalidate()`; default 5000 ms. */
  minInvalidateIntervalMs?: number;
  /** Minimum time between the end of a failed exchange and one started by `current()` without valid credentials; default 1000 ms. */
  minExpiredRetryIntervalMs?: number;
  /** Repeated failures are logged at most once per interval; default 60000 ms. */
  failureLogIntervalMs?: number;
  clock?: RefresherClock;
  /** Returns a number in [0, 1) for the retry jitter; default Math.random. */
  random?: () => number;
}

type ExchangeTrigger = 'start' | 'renewal' | 'retry' | 'expired' | 'invalidate';

interface PendingExchange<T> {
  promise: Promise<T>;
  controller: AbortController;
  timeout: unknown;
}

export class CredentialRefresher<T extends { expiration: Date }> implements CredentialSource<T> {
  private readonly name: string;
  private readonly exchange: (signal: AbortSignal) => Promise<T>;
  private readonly logger: Logger;
  private readonly describe: (credentials: T) => Record<string, unknown>;
  private readonly renewAtFraction: number;
  private readonly expiryMarginMs: number;
  private readonly initialRetryDelayMs: number;
  private readonly maxRetryDelayMs: number;
  private readonly exchangeTimeoutMs: number;
  private readonly minInvalidateIntervalMs: number;
  private readonly minExpiredRetryIntervalMs: number;
  private readonly failureLogIntervalMs: number;
  private readonly clock: RefresherClock;
  private readonly random: () => number;

  // All fields below are changed only on the event loop thread. An exchange
  // spans await points, and `pending` is the one guard: it is set before the
  // exchange starts and cleared after its result is stored, so at most one
  // exchange runs and `held` only ever moves to newer credentials.
  private held: T | undefined;
  private pending: PendingExchange<T> | undefined;
  private timer: unknown;
  private started = false;
  private stopped = false;
  private lastExchangeEndedAt: number | undefined;
  private nextAttemptAt: number | undefined;
  private lastError: CredentialError | undefined;
  private lastRenewal: Date | undefined;
  private consecutiveFailures = 0;
  private totalRenewals = 0;
  private totalFailures = 0;
  private lastFailureLogAt: number | undefined;
  private suppressedFailureLogs = 0;

  constructor(options: RefresherOptions<T>) {
    this.name = options.name;
    this.exchange = options.exchange;
    this.logger = options.logger;
    this.describe = options.describe ?? (() => ({}));
    this.renewAtFraction = options.renewAtFraction ?? 0.8;
    this.expiryMarginMs = options.expiryMarginMs ?? 5_000;
    this.initialRetryDelayMs = options.initialRetryDelayMs ?? 1_000;
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? 60_000;
    this.exchangeTimeoutMs = options.exchangeTimeoutMs ?? 30_000;
    this.minInvalidateIntervalMs = options.minInvalidateIntervalMs ?? 5_000;
    this.minExpiredRetryIntervalMs = options.minExpiredRetryIntervalMs ?? 1_000;
    this.failureLogIntervalMs = options.failureLogIntervalMs ?? 60_000;
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;

    if (!(this.renewAtFraction > 0 && this.renewAtFraction < 1)) {
      throw new RangeError(`renewAtFraction must be between 0 and 1 (exclusive), got ${this.renewAtFraction}`);
    }
  }

  /**
   * Performs the first exchange and starts background renewal. When the first
   * exchange fails, this rejects with its `CredentialError` and the refresher
   * keeps retrying in the background until `stop()`.
   */
  async start(): Promise<void> {
    this.throwIfStopped();
    if (this.started) {
      await this.current();
      return;
    }
    this.started = true;
    this.logger.info({ source: this.name, renewAtFraction: this.renewAtFraction }, 'credential refresher started');
    await this.runExchange('start');
  }

  async current(signal?: AbortSignal): Promise<T> {
    this.throwIfStopped();
    const now = this.clock.now();
    const held = this.held;

    if (held !== undefined && now < held.expiration.getTime() - this.expiryMarginMs) {
      return held;
    }

    // Credentials are missing, expired or about to expire, so join a running
    // exchange or start one. When the last exchange failed and its retry is
    // still scheduled, an operation starts one only if the last attempt ended
    // at least minExpiredRetryIntervalMs ago, and fails fast with the last
    // failure otherwise. So the token service gets at most one exchange per
    // interval, and the mount recovers within it once the service is back,
    // however long the backoff has grown.
    let exchange = this.pending?.promise;
    if (exchange === undefined) {
      if (this.lastError !== undefined && this.nextAttemptAt !== undefined && now < this.nextAttemptAt) {
        if (held !== undefined && now < held.expiration.getTime()) {
          return held;
        }
        const sinceLastAttempt = now - (this.lastExchangeEndedAt ?? Number.NEGATIVE_INFINITY);
        if (sinceLastAttempt < this.minExpiredRetryIntervalMs) {
          throw this.lastError;
        }
      }
      exchange = this.runExchange('expired');
    }

    try {
      return await waitWithSignal(exchange, signal);
    } catch (error) {
      // Credentials inside the safety margin are still accepted by the
      // server, so they are better than failing the operation.
      if (held !== undefined && this.clock.now() < held.expiration.getTime() && !isAbort(error, signal)) {
        return held;
      }
      throw error;
    }
  }

  /**
   * Starts one immediate exchange, shared by all callers, because a server
   * rejected the credentials. The held credentials stay in place, so
   * `current()` keeps returning them until they expire even when this
   * exchange fails.
   */
  async invalidate(reason: string): Promise<T> {
    this.throwIfStopped();
    this.logger.info({ source: this.name, reason }, 'credentials invalidated; renewing now');

    if (this.pending !== undefined) {
      return this.pending.promise;
    }

    const now = this.clock.now();
    if (this.lastExchangeEndedAt !== undefined && now - this.lastExchangeEndedAt < this.minInvalidateIntervalMs) {
      if (this.consecutiveFailures === 0 && this.held !== undefined) {
        this.logger.debug({ source: this.name }, 'credentials were renewed moments ago; keeping them');
        return this.held;
      }
      if (this.lastError !== undefined) {
        throw this.lastError;
      }
    }
    return this.runExchange('invalidate');
  }

  state(): CredentialState {
    return {
      expiration: this.held?.expiration,
      lastRenewal: this.lastRenewal,
      consecutiveFailures: this.consecutiveFailures,
      totalRenewals: this.totalRenewals,
      totalFailures: this.totalFailures,
      lastError: this.lastError?.message,
      lastFailedStep: this.lastError?.step,
    };
  }

  stop(): void {
    if (this.stopped) {
      return;
    }
    this.stopped = true;
    this.cancelTimer();
    if (this.pending !== undefined) {
      this.clock.clearTimeout(this.pending.timeout);
      this.pending.controller.abort(stoppedError(this.name));
    }
    this.logger.info({ source: this.name, totalRenewals: this.totalRenewals, totalFailures: this.totalFailures }, 'credential refresher stopped');
  }

  private runExchange(trigger: ExchangeTrigger): Promise<T> {
    if (this.pending !== undefined) {
      return this.pending.promise;
    }
    this.cancelTimer();

    const controller = new AbortController();
    const timeout = this.clock.setTimeout(() => {
      controller.abort(
        new CredentialError(`the ${this.name} credential exchange timed out after ${this.exchangeTimeoutMs} ms`, {
          code: 'Timeout',
          step: 'refresher',
          retryable: true,
          explanation: `the ${this.name} credential exchange did not finish within ${this.exchangeTimeoutMs} ms; check that the token service endpoint is reachable`,
        }),
      );
    }, this.exchangeTimeoutMs);

    const attempt = async (): Promise<T> => {
      try {
        const credentials = await waitWithSignal(this.exchange(controller.signal), controller.signal);
        this.onSuccess(trigger, credentials);
        return credentials;
      } catch (error) {
        const failure = this.normalizeError(error, controller.signal);
        this.onFailure(trigger, failure);
        throw failure;
      } finally {
        this.clock.clearTimeout(timeout);
        this.pending = undefined;
        this.lastExchangeEndedAt = this.clock.now();
      }
    };

    const promise = attempt();
    // Callers that gave up (their own signal aborted) no longer await this
    // promise; the failure is already logged, so an unawaited rejection is fine.
    promise.catch(() => undefined);
    this.pending = { promise, controller, timeout };
    return promise;
  }

  private onSuccess(trigger: ExchangeTrigger, credentials: T): void {
    const now = this.clock.now();
    const expiresAt = credentials.expiration.getTime();
    if (!(expiresAt > now)) {
      throw new CredentialError(
        `the ${this.name} exchange returned credentials that expired at ${credentials.expiration.toISOString()}, before the local time ${new Date(now).toISOString()}`,
        {
          code: 'InvalidResponse',
          step: 'refresher',
          retryable: true,
          explanation: 'the token service returned already expired credentials; check that this machine\'s clock is synchronized',
        },
      );
    }

    const recoveredAfter = this.consecutiveFailures;
    this.held = credentials;
    this.lastRenewal = new Date(now);
    this.totalRenewals += 1;
    this.consecutiveFailures = 0;
    this.lastError = undefined;
    this.nextAttemptAt = undefined;
    this.suppressedFailureLogs = 0;
    this.lastFailureLogAt = undefined;

    if (this.stopped) {
      return;
    }
    const delay = Math.max(0, Math.floor((expiresAt - now) * this.renewAtFraction));
    this.schedule('renewal', delay);

    this.logger.info(
      {
        source: this.name,
        trigger,
        expiration: credentials.expiration.toISOString(),
        lifetimeSeconds: Math.round((expiresAt - now) / 1000),
        nextRenewalInSeconds: Math.round(delay / 1000),
        ...(recoveredAfter > 0 ? { recoveredAfterFailures: recoveredAfter } : {}),
        ...this.describe(credentials),
      },
      'credentials renewed',
    );
  }

  private onFailure(trigger: ExchangeTrigger, failure: CredentialError): void {
    this.consecutiveFailures += 1;
    this.totalFailures += 1;
    this.lastError = failure;

    if (this.stopped) {
      return;
    }
    // While the held credentials are valid, the next attempt comes before they
    // expire. The bound is at most half of the time left before the expiry
    // margin, so a token service that comes back late in an outage is used
    // before operations would have to wait or fail.
    let bound = Math.min(this.maxRetryDelayMs, this.initialRetryDelayMs * 2 ** (this.consecutiveFailures - 1));
    const heldUsableMs = this.held === undefined ? 0 : this.held.expiration.getTime() - this.expiryMarginMs - this.clock.now();
    if (heldUsableMs > 0) bound = Math.min(bound, Math.max(this.initialRetryDelayMs, heldUsableMs / 2));
    const delay = Math.floor(this.random() * bound);
    this.schedule('retry', delay);

    const now = this.clock.now();
    if (this.lastFailureLogAt !== undefined && now - this.lastFailureLogAt < this.failureLogIntervalMs) {
      this.suppressedFailureLogs += 1;
      return;
    }
    this.lastFailureLogAt = now;
    const heldExpiration = this.held?.expiration;
    this.logger.warn(
      {
        source: this.name,
        trigger,
        step: failure.step,
        code: failure.code,
        serviceCode: failure.serviceCode,
        reason: failure.message,
        consecutiveFailures: this.consecutiveFailures,
        suppressedFailureLogs: this.suppressedFailureLogs,
        retryInMs: delay,
        heldCredentialsExpiration: heldExpiration?.toISOString(),
        heldCredentialsValid: heldExpiration !== undefined && heldExpiration.getTime() > now,
      },
      'credential exchange failed; retrying with backoff',
    );
    this.suppressedFailureLogs = 0;
  }

  private schedule(reason: 'renewal' | 'retry', delayMs: number): void {
    this.cancelTimer();
    this.nextAttemptAt = reason === 'retry' ? this.clock.now() + delayMs : undefined;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) {
        return;
      }
      // runExchange logs and stores the outcome, so the promise is not awaited here.
      this.runExchange(reason).catch(() => undefined);
    }, delayMs);
  }

  private cancelTimer(): void {
    if (this.timer !== undefined) {
      this.clock.clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  private normalizeError(error: unknown, signal: AbortSignal): CredentialError {
    if (signal.aborted && isCredentialError(signal.reason)) {
      return signal.reason;
    }
    if (isCredentialError(error)) {
      return error;
    }
    return new CredentialError(`the ${this.name} credential exchange failed: ${(error as Error)?.message ?? String(error)}`, {
      code: 'Unknown',
      step: 'refresher',
      retryable: true,
      cause: error,
      explanation: `the ${this.name} credential exchange failed with an unexpected error: ${(error as Error)?.message ?? String(error)}`,
    });
  }

  private throwIfStopped(): void {
    if (this.stopped) {
      throw stoppedError(this.name);
    }
  }
}

function stoppedError(name: string): CredentialError {
  return new CredentialError(`the ${name} credential refresher is stopped`, {
    code: 'Stopped',
    step: 'refresher',
    explanation: `the ${name} credential refresher was stopped, so it no longer provides credentials`,
  });
}

function isAbort(error: unknown, signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true && isCredentialError(error) && error.code === 'Aborted';
}

/** Awaits `promise`, or rejects with an `Aborted` CredentialError when `signal` aborts first. */
function waitWithSignal<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) {
    return promise;
  }
  const abortError = (): unknown =>
    isCredentialError(signal.reason)
      ? signal.reason
      : new CredentialError('waiting for credentials was aborted', {
          code: 'Aborted',
          step: 'refresher',
          cause: signal.reason,
          explanation: 'the operation that needed credentials was aborted',
        });

  if (signal.aborted) {
    return Promise.reject(abortError());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
