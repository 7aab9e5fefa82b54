/**
 * Tests of the fault-injection proxy against a small upstream HTTP server on
 * loopback: every fault kind, the seeded draws, the counters, the down switch
 * and the request records.
 */

import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { seededRandom, startFaultProxy, type FaultProxy, type FaultProxyOptions } from './fault-proxy.js';

const BODY = Buffer.alloc(64 * 1024, 'x');

interface Outcome {
  status?: number;
  headers?: Record<string, string | string[] | undefined>;
  body?: Buffer;
  /** Node.js error code of a failed request or of a body that ended early. */
  errorCode?: string;
}

/** Sends one request on a new connection and collects the whole answer or the error. */
function send(url: string, options: { method?: string; body?: string } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const request = httpRequest(url, { method: options.method ?? 'GET', agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', (error: NodeJS.ErrnoException) => resolve({ status: response.statusCode, body: Buffer.concat(chunks), errorCode: error.code ?? error.message }));
      response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks) }));
    });
    request.on('error', (error: NodeJS.ErrnoException) => resolve({ errorCode: error.code ?? error.message }));
    request.end(options.body);
  });
}

let upstream: Server;
let upstreamUrl: string;
let upstreamRequests = 0;
const proxies: FaultProxy[] = [];

beforeAll(async () => {
  upstream = createServer((request, response) => {
    upstreamRequests += 1;
    request.resume();
    request.on('end', () => {
      if (request.url === '/empty') {
        response.writeHead(200, { 'content-length': 0 });
        response.end();
        return;
      }
      response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BODY.length });
      response.end(BODY);
    });
  });
  await new Promise<void>((resolve) => upstream.listen({ host: '127.0.0.1', port: 0 }, () => resolve()));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});

afterEach(async () => {
  for (const proxy of proxies.splice(0)) await proxy.stop();
});

afterAll(async () => {
  await new Promise<void>((resolve) => {
    upstream.close(() => resolve());
    upstream.closeAllConnections();
  });
});

async function proxyWith(options: Partial<FaultProxyOptions>): Promise<FaultProxy> {
  const proxy = await startFaultProxy({ upstream: upstreamUrl, flavor: 's3', ...options });
  proxies.push(proxy);
  return proxy;
}

describe('fault proxy', () => {
  it('forwards unchanged without faults', async () => {
    const proxy = await proxyWith({});
    const outcome = await send(`${proxy.endpoint}/object`);

    expect(outcome.errorCode).toBeUndefined();
    expect(outcome.status).toBe(200);
    expect(outcome.body?.equals(BODY)).toBe(true);
    expect(proxy.counters()).toMatchObject({ requests: 1, forwarded: 1 });
    expect(proxy.injectedFaults()).toBe(0);
  });

  it('throttles with S3 SlowDown XML', async () => {
    const proxy = await proxyWith({ flavor: 's3', faults: { throttleRate: 1 } });
    const before = upstreamRequests;
    const outcome = await send(`${proxy.endpoint}/object`, { method: 'PUT', body: 'data' });

    expect(outcome.status).toBe(503);
    expect(outcome.body?.toString()).toContain('<Code>SlowDown</Code>');
    expect(upstreamRequests).toBe(before);
    expect(proxy.counters().throttled).toBe(1);
  });

  it('throttles with GCS JSON errors', async () => {
    const proxy = await proxyWith({ flavor: 'gcs', faults: { tooManyRequestsRate: 1 } });
    const outcome = await send(`${proxy.endpoint}/storage/v1/b/bucket/o`);

    expect(outcome.status).toBe(429);
    const parsed = JSON.parse(outcome.body!.toString()) as { error: { code: number; errors: Array<{ reason: string }> } };
    expect(parsed.error.code).toBe(429);
    expect(parsed.error.errors[0]?.reason).toBe('rateLimitExceeded');
    expect(proxy.counters().tooManyRequests).toBe(1);
  });

  it('resets connections halfway through the body', async () => {
    const proxy = await proxyWith({ faults: { resetRate: 1 } });
    const outcome = await send(`${proxy.endpoint}/object`);

    expect(outcome.errorCode).toBeDefined();
    expect(outcome.body?.length ?? 0).toBeLessThan(BODY.length);
    expect(proxy.counters().resetsInBody).toBe(1);
  });

  it('resets before headers when the body is empty', async () => {
    const proxy = await proxyWith({ faults: { resetRate: 1 } });
    const before = upstreamRequests;
    const outcome = await send(`${proxy.endpoint}/empty`, { method: 'PUT', body: 'data' });

    expect(outcome.status).toBeUndefined();
    expect(outcome.errorCode).toBe('ECONNRESET');
    // The server carried the request out; only its answer was lost.
    expect(upstreamRequests).toBe(before + 1);
    expect(proxy.counters().resetsBeforeHeaders).toBe(1);
  });

  it('truncates bodies and keeps Content-Length', async () => {
    const proxy = await proxyWith({ faults: { truncateRate: 1 } });
    const outcome = await send(`${proxy.endpoint}/object`);

    expect(outcome.status).toBe(200);
    expect(outcome.errorCode).toBeDefined();
    expect(outcome.body?.length).toBe(BODY.length / 2);
    expect(proxy.counters().truncated).toBe(1);
  });

  it('same seed injects the same faults', async () => {
    const faults = { throttleRate: 0.3, truncateRate: 0.3 };
    const first = await proxyWith({ seed: 42, faults });
    const second = await proxyWith({ seed: 42, faults });
    const other = await proxyWith({ seed: 43, faults });

    const sequence = async (proxy: FaultProxy): Promise<string[]> => {
      for (let index = 0; index < 30; index += 1) await send(`${proxy.endpoint}/object`);
      return proxy.requests().map((entry) => entry.fault);
    };
    const firstFaults = await sequence(first);

    expect(await sequence(second)).toEqual(firstFaults);
    expect(await sequence(other)).not.toEqual(firstFaults);
    expect(firstFaults).toContain('throttle');
    expect(firstFaults).toContain('truncate');
    expect(firstFaults).toContain('none');
  });

  it('fault shares follow the settings', () => {
    const random = seededRandom(7);
    let below = 0;
    for (let index = 0; index < 10_000; index += 1) if (random() < 0.1) below += 1;
    expect(below).toBeGreaterThan(900);
    expect(below).toBeLessThan(1100);
  });

  it('switches faults at runtime', async () => {
    const proxy = await proxyWith({ faults: { throttleRate: 1 } });
    expect((await send(`${proxy.endpoint}/object`)).status).toBe(503);

    proxy.clearFaults();
    expect((await send(`${proxy.endpoint}/object`)).status).toBe(200);

    proxy.setFaults({ tooManyRequestsRate: 1 });
    expect((await send(`${proxy.endpoint}/object`)).status).toBe(429);
    expect(() => proxy.setFaults({ throttleRate: 0.5 })).toThrow(/more than 1/);
  });

  it('taken down resets or answers 503', async () => {
    const proxy = await proxyWith({});
    const before = upstreamRequests;

    proxy.takeDown('reset');
    expect(proxy.isDown).toBe(true);
    expect((await send(`${proxy.endpoint}/object`)).errorCode).toBe('ECONNRESET');

    proxy.takeDown('unavailable');
    expect((await send(`${proxy.endpoint}/object`)).status).toBe(503);
    expect(upstreamRequests).toBe(before);

    proxy.bringUp();
    expect((await send(`${proxy.endpoint}/object`)).status).toBe(200);
    expect(proxy.counters().rejectedWhileDown).toBe(2);
  });

  it('applies faults only where the filter matches', async () => {
    const proxy = await proxyWith({ faults: { throttleRate: 1 }, appliesTo: (_method, path, kind) => kind === 'throttle' && path.startsWith('/data') });

    expect((await send(`${proxy.endpoint}/data/x`)).status).toBe(503);
    expect((await send(`${proxy.endpoint}/control`)).status).toBe(200);
  });

  it('records small request bodies', async () => {
    const proxy = await proxyWith({ recordBodies: true });
    await send(`${proxy.endpoint}/sts`, { method: 'POST', body: 'Action=AssumeRoleWithWebIdentity&WebIdentityToken=abc' });

    const [entry] = proxy.requests();
    expect(entry?.method).toBe('POST');
    expect(entry?.body).toContain('WebIdentityToken=abc');
  });

  it('added latency still forwards', async () => {
    const proxy = await proxyWith({ faults: { latencyMs: 20, latencyJitterMs: 20 } });
    const outcome = await send(`${proxy.endpoint}/object`);
    expect(outcome.body?.equals(BODY)).toBe(true);
  });

  it('rejects an upstream off loopback', async () => {
    await expect(startFaultProxy({ upstream: 'http://example.com', flavor: 's3' })).rejects.toThrow(/loopback/);
  });
});
