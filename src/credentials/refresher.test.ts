import { Writable } from 'node:stream';

import { pino } from 'pino';
import { describe, expect, it } from 'vitest';

import { REDACTED_PATHS, type Logger } from '../observability/logger.js';
import { CredentialError } from './errors.js';
import { CredentialRefresher, type RefresherClock, type RefresherOptions } from './refresher.js';

interface TestCredentials {
  value: string;
  expiration: Date;
}

interface FakeTimer {
  id: number;
  dueAt: number;
  delayMs: number;
  callback: () => void;
}

/** A clock whose time moves only when a test calls `advance`. */
class FakeClock implements RefresherClock {
  private time = Date.UTC(2026, 0, 1);
  private nextId = 1;
  readonly timers = new Map<number, FakeTimer>();

  now(): number {
    return this.time;
  }

  setTimeout(callback: () => void, delayMs: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { id, dueAt: this.time + delayMs, delayMs, callback });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  /** Delays of the pending timers, excluding exchange timeouts (which are longer than any test timer). */
  pendingDelays(maxDelayMs = 1_000_000): number[] {
    return [...this.timers.values()].filter((timer) => timer.delayMs < maxDelayMs).map((timer) => timer.delayMs);
  }

  /** Moves time forward, firing due timers in order and letting their promises settle. */
  async advance(milliseconds: number): Promise<void> {
    const target = this.time + milliseconds;
    for (;;) {
      const due = [...this.timers.values()].filter((timer) => timer.dueAt <= target).sort((a, b) => a.dueAt - b.dueAt)[0];
      if (due === undefined) {
        break;
      }
      this.timers.delete(due.id);
      this.time = due.dueAt;
      due.callback();
      await settle();
    }
    this.time = target;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) {
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((resolvePromise, rejectPromise) => {
    resolve = resolvePromise;
    reject = rejectPromise;
  });
  return { promise, resolve, reject };
}

function captureLogger(): { logger: Logger; lines: () => Array<Record<string, unknown>>; text: () => string } {
  let buffer = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      buffer += chunk.toString('utf8');
      callback();
    },
  });
  const logger = pino({ level: 'debug', redact: { paths: REDACTED_PATHS, censor: '[redacted]' } }, stream);
  return {
    logger,
    text: () => buffer,
    lines: () =>
      buffer
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

const LIFETIME_MS = 100_000;

function exchangeFailure(message = 'STS unavailable'): CredentialError {
  return new CredentialError(message, { code: 'ServiceUnavailable', step: 'sts', retryable: true, explanation: message });
}

/**
 * Creates a refresher on a fake clock whose exchange outcome the test sets
 * with `succeed`, `fail` or `block` (a deferred the test settles later).
 */
function setup(overrides: Partial<RefresherOptions<TestCredentials>> = {}) {
  const clock = new FakeClock();
  const log = captureLogger();
  const signals: AbortSignal[] = [];
  let calls = 0;
  let nextOutcome: () => Promise<TestCredentials> = async () => ({
    value: `credentials-${calls}`,
    expiration: new Date(clock.now() + LIFETIME_MS),
  });

  const refresher = new CredentialRefresher<TestCredentials>({
    name: 'test-source',
    logger: log.logger,
    clock,
    random: () => 0.5,
    expiryMarginMs: 1_000,
    initialRetryDelayMs: 1_000,
    maxRetryDelayMs: 8_000,
    minInvalidateIntervalMs: 5_000,
    exchange: (signal) => {
      calls += 1;
      signals.push(signal);
      return nextOutcome();
    },
    ...overrides,
  });

  return {
    clock,
    log,
    refresher,
    signals,
    calls: () => calls,
    succeed: () => {
      nextOutcome = async () => ({ value: `credentials-${calls}`, expiration: new Date(clock.now() + LIFETIME_MS) });
    },
    fail: (error: CredentialError = exchangeFailure()) => {
      nextOutcome = async () => {
        throw error;
      };
    },
    block: (): Deferred<TestCredentials> => {
      const gate = deferred<TestCredentials>();
      nextOutcome = () => gate.promise;
      return gate;
    },
  };
}

describe('CredentialRefresher', () => {
  it('start performs first exchange', async () => {
    const { refresher, calls } = setup();

    await refresher.start();
    const credentials = await refresher.current();

    expect(calls()).toBe(1);
    expect(credentials.value).toBe('credentials-1');
    expect(refresher.state()).toMatchObject({ totalRenewals: 1, consecutiveFailures: 0 });
    refresher.stop();
  });

  it('renews at 80 percent of lifetime', async () => {
    const { refresher, clock, calls } = setup();
    await refresher.start();

    await clock.advance(LIFETIME_MS * 0.8 - 1);
    const beforeRenewal = calls();
    await clock.advance(1);
    const afterRenewal = calls();

    expect(beforeRenewal).toBe(1);
    expect(afterRenewal).toBe(2);
    expect((await refresher.current()).value).toBe('credentials-2');
    refresher.stop();
  });

  it('renewal fraction is configurable', async () => {
    const { refresher, clock } = setup({ renewAtFraction: 0.5 });
    await refresher.start();

    expect(clock.pendingDelays()).toEqual([LIFETIME_MS * 0.5]);
    refresher.stop();
  });

  it('concurrent callers share one exchange', async () => {
    const { refresher, calls, block } = setup();
    const gate = block();

    const callers = Array.from({ length: 20 }, () => refresher.current());
    await settle();
    gate.resolve({ value: 'shared', expiration: new Date(Date.UTC(2026, 0, 2)) });
    const results = await Promise.all(callers);

    expect(calls()).toBe(1);
    expect(new Set(results.map((result) => result.value))).toEqual(new Set(['shared']));
  });

  it('current does not wait during renewal', async () => {
    const { refresher, clock, block } = setup();
    await refresher.start();
    const gate = block();

    await clock.advance(LIFETIME_MS * 0.8);
    const during = await refresher.current();
    gate.resolve({ value: 'renewed', expiration: new Date(clock.now() + LIFETIME_MS) });
    await settle();
    const after = await refresher.current();

    expect(during.value).toBe('credentials-1');
    expect(after.value).toBe('renewed');
  });

  it('current waits when expired', async () => {
    const { refresher, clock, block, calls } = setup();
    await refresher.start();
    // Drop the renewal timer so that the credentials simply run out.
    clock.timers.clear();
    await clock.advance(LIFETIME_MS);
    const gate = block();

    let settled = false;
    const waiting = refresher.current().then((value) => {
      settled = true;
      return value;
    });
    await settle();
    const settledBeforeExchange = settled;
    gate.resolve({ value: 'fresh', expiration: new Date(clock.now() + LIFETIME_MS) });

    expect(settledBeforeExchange).toBe(false);
    expect((await waiting).value).toBe('fresh');
    expect(calls()).toBe(2);
    refresher.stop();
  });

  it('failed renewals back off and keep serving', async () => {
    const { refresher, clock, fail, calls } = setup();
    await refresher.start();
    fail();

    await clock.advance(LIFETIME_MS * 0.8);
    const firstRetryDelays = clock.pendingDelays();
    await clock.advance(firstRetryDelays[0] ?? 0);
    const secondRetryDelays = clock.pendingDelays();
    await clock.advance(secondRetryDelays[0] ?? 0);
    const thirdRetryDelays = clock.pendingDelays();
    const served = await refresher.current();

    // With random() = 0.5 the jittered delay is half the exponential bound.
    expect(firstRetryDelays).toEqual([500]);
    expect(secondRetryDelays).toEqual([1_000]);
    expect(thirdRetryDelays).toEqual([2_000]);
    expect(calls()).toBe(4);
    expect(served.value).toBe('credentials-1');
    expect(refresher.state()).toMatchObject({ consecutiveFailures: 3, totalFailures: 3, lastFailedStep: 'sts' });
    refresher.stop();
  });

  it('retry delay is capped', async () => {
    const { refresher, clock, fail } = setup({ random: () => 0.999 });
    await refresher.start();
    fail();

    // Past the expiry, so that only the configured cap bounds the delay.
    await clock.advance(LIFETIME_MS * 1.1);
    for (let i = 0; i < 6; i++) {
      await clock.advance(clock.pendingDelays()[0] ?? 0);
    }

    expect(clock.pendingDelays()[0]).toBeLessThanOrEqual(8_000);
    expect(clock.pendingDelays()[0]).toBeGreaterThan(7_000);
    refresher.stop();
  });

  it('retries before held credentials expire', async () => {
    const { refresher, clock, fail } = setup({ random: () => 0.999, maxRetryDelayMs: 60_000 });
    await refresher.start();
    const usableUntil = clock.now() + LIFETIME_MS - 1_000;
    fail();

    // Renewal at 80 % fails, and every retry while the credentials are usable is scheduled before they expire.
    await clock.advance(LIFETIME_MS * 0.8);
    let retries = 0;
    while (clock.now() < usableUntil - 1_000) {
      const delay = clock.pendingDelays()[0] ?? 0;
      expect(clock.now() + delay).toBeLessThan(usableUntil);
      await clock.advance(delay);
      retries += 1;
    }
    expect(retries).toBeGreaterThanOrEqual(4);
    refresher.stop();
  });

  it('recovers after failures', async () => {
    const { refresher, clock, fail, succeed } = setup();
    await refresher.start();
    fail();
    await clock.advance(LIFETIME_MS * 0.8);
    succeed();

    await clock.advance(clock.pendingDelays()[0] ?? 0);

    expect(refresher.state()).toMatchObject({ consecutiveFailures: 0, totalRenewals: 2, totalFailures: 1 });
    expect(refresher.state().lastError).toBeUndefined();
    refresher.stop();
  });

  it('expired credentials retry once per interval during backoff', async () => {
    const failure = exchangeFailure('the STS endpoint is down');
    const { refresher, clock, fail, succeed, calls } = setup({ initialRetryDelayMs: 1_000_000, maxRetryDelayMs: 1_000_000, minExpiredRetryIntervalMs: 1_000 });
    await refresher.start();
    fail(failure);
    await clock.advance(LIFETIME_MS);

    // The first burst after expiry shares one exchange, which fails.
    const callsBefore = calls();
    const first = await Promise.allSettled([refresher.current(), refresher.current(), refresher.current()]);
    expect(first.map((result) => result.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect((first[0] as PromiseRejectedResult).reason).toBe(failure);
    expect(calls()).toBe(callsBefore + 1);

    // Within the interval, operations fail fast without another exchange.
    await expect(refresher.current()).rejects.toBe(failure);
    expect(calls()).toBe(callsBefore + 1);

    // Once the service is back, the first operation after the interval renews, long before the backoff ends.
    succeed();
    await clock.advance(1_000);
    await expect(refresher.current()).resolves.toMatchObject({ value: expect.stringMatching(/^credentials-/) });
    expect(calls()).toBe(callsBefore + 2);
    refresher.stop();
  });

  it('first exchange failure rejects start', async () => {
    const failure = exchangeFailure();
    const { refresher, fail, clock } = setup();
    fail(failure);

    await expect(refresher.start()).rejects.toBe(failure);
    expect(clock.pendingDelays()).toEqual([500]);
    refresher.stop();
  });

  it('invalidate shares one exchange', async () => {
    const { refresher, clock, calls, block } = setup();
    await refresher.start();
    await clock.advance(10_000);
    const gate = block();

    const callers = Array.from({ length: 10 }, () => refresher.invalidate('server returned InvalidAccessKeyId'));
    await settle();
    gate.resolve({ value: 'after-invalidate', expiration: new Date(clock.now() + LIFETIME_MS) });
    const results = await Promise.all(callers);

    expect(calls()).toBe(2);
    expect(new Set(results.map((result) => result.value))).toEqual(new Set(['after-invalidate']));
    refresher.stop();
  });

  it('invalidate is rate limited', async () => {
    const { refresher, clock, calls } = setup();
    await refresher.start();
    await clock.advance(10_000);

    await refresher.invalidate('first rejection');
    const afterFirst = calls();
    await clock.advance(1_000);
    const second = await refresher.invalidate('rejection of a request signed earlier');
    const afterSecond = calls();
    await clock.advance(5_000);
    await refresher.invalidate('rejection after the interval');

    expect(afterFirst).toBe(2);
    expect(afterSecond).toBe(2);
    expect(second.value).toBe('credentials-2');
    expect(calls()).toBe(3);
    refresher.stop();
  });

  it('invalidate failure keeps held credentials', async () => {
    const failure = exchangeFailure('access revoked');
    const { refresher, clock, fail } = setup();
    await refresher.start();
    await clock.advance(10_000);
    fail(failure);

    await expect(refresher.invalidate('AccessDenied')).rejects.toBe(failure);
    await expect(refresher.invalidate('AccessDenied again')).rejects.toBe(failure);
    expect((await refresher.current()).value).toBe('credentials-1');
    refresher.stop();
  });

  it('stop clears timers and aborts', async () => {
    const { refresher, clock, block, signals } = setup();
    await refresher.start();
    const timersWhileRunning = clock.timers.size;
    block();
    await clock.advance(LIFETIME_MS * 0.8);
    const exchangeSignal = signals.at(-1);

    refresher.stop();
    refresher.stop();

    expect(timersWhileRunning).toBe(1);
    expect(clock.timers.size).toBe(0);
    expect(exchangeSignal?.aborted).toBe(true);
    await expect(refresher.current()).rejects.toMatchObject({ code: 'Stopped' });
    await expect(refresher.invalidate('late rejection')).rejects.toMatchObject({ code: 'Stopped' });
  });

  it('exchange timeout fails exchange', async () => {
    const { refresher, clock, block } = setup({ exchangeTimeoutMs: 30_000 });
    block();

    const starting = refresher.start();
    const outcome = expect(starting).rejects.toMatchObject({ code: 'Timeout', step: 'refresher' });
    await clock.advance(30_000);

    await outcome;
    refresher.stop();
  });

  it('caller signal abort leaves exchange running', async () => {
    const { refresher, block, calls } = setup();
    const gate = block();
    const controller = new AbortController();

    const abandoned = refresher.current(controller.signal);
    const patient = refresher.current();
    await settle();
    controller.abort();
    await expect(abandoned).rejects.toMatchObject({ code: 'Aborted' });
    gate.resolve({ value: 'late', expiration: new Date(Date.UTC(2026, 0, 2)) });

    expect((await patient).value).toBe('late');
    expect(calls()).toBe(1);
    refresher.stop();
  });

  it('rejects already expired credentials', async () => {
    const { refresher, clock } = setup({
      exchange: async () => ({ value: 'stale', expiration: new Date(clock.now() - 1) }),
    });

    await expect(refresher.start()).rejects.toMatchObject({ code: 'InvalidResponse' });
    refresher.stop();
  });

  it('logs renewals and rate-limits failures', async () => {
    const { refresher, clock, fail, log } = setup({ failureLogIntervalMs: 60_000 });
    await refresher.start();
    fail(exchangeFailure('the STS endpoint is down'));

    await clock.advance(LIFETIME_MS * 0.8);
    for (let i = 0; i < 4; i++) {
      await clock.advance(clock.pendingDelays()[0] ?? 0);
    }
    refresher.stop();
    const messages = log.lines().map((line) => line.msg);
    const failures = log.lines().filter((line) => line.msg === 'credential exchange failed; retrying with backoff');

    expect(messages[0]).toBe('credential refresher started');
    expect(messages).toContain('credentials renewed');
    expect(messages.at(-1)).toBe('credential refresher stopped');
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ step: 'sts', code: 'ServiceUnavailable', reason: 'the STS endpoint is down' });
  });

  it('logs no secret fields', async () => {
    const { refresher, log } = setup({
      exchange: async () => ({ value: 'SECRET-VALUE', expiration: new Date(Date.UTC(2026, 0, 2)) }),
    });

    await refresher.start();
    refresher.stop();

    expect(log.text()).not.toContain('SECRET-VALUE');
  });
});
