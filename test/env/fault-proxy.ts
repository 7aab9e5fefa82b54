/**
 * A fault-injection HTTP proxy on 127.0.0.1, placed between the daemon and a
 * test server (MinIO, MinIO's STS, the GCS auth proxy, the GCP fakes).
 *
 * Requests are forwarded unchanged, the Host header included, so that SigV4
 * signatures made for the proxy's address still verify at MinIO. Each request
 * draws one number from a seeded generator, in arrival order, and that number
 * picks at most one fault by the configured shares:
 * - `throttle`: answered 503 without reaching the server, with the error body
 *   of the server's API (S3 `SlowDown` XML, GCS JSON `backendError`, or an
 *   OAuth JSON error for token services);
 * - `tooManyRequests`: answered 429 the same way (S3 `SlowDown`, GCS
 *   `rateLimitExceeded`);
 * - `reset`: forwarded; the connection is reset (TCP RST) halfway through the
 *   response body, or before the response headers when the body is empty, in
 *   which case the server has already carried out the request;
 * - `truncate`: forwarded; the response keeps its Content-Length but the
 *   connection is closed (FIN) halfway through the body. Responses without a
 *   body pass unchanged.
 * Added latency delays every forwarded request, with optional jitter from the
 * same generator. The optional `appliesTo` filter drops a drawn fault by
 * method, path and kind, so a test can, for example, cut only downloads.
 *
 * `takeDown()` makes the upstream unreachable until `bringUp()`: every request
 * is reset at once or answered 503, and nothing is forwarded. All settings
 * change at runtime, and counters record every injected fault.
 *
 * The generator is a 32-bit xorshift, so a given seed and request order
 * inject the same faults. Concurrent clients make the order itself vary
 * between runs, so tests assert on outcomes, not on which request failed.
 */

import { randomBytes } from 'node:crypto';
import { Agent, createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** Which API's error bodies the proxy answers with. */
export type FaultFlavor = 's3' | 'gcs' | 'oauth';

export interface FaultSettings {
  /** Share of requests answered 503, from 0 to 1. */
  throttleRate: number;
  /** Share of requests answered 429, from 0 to 1. */
  tooManyRequestsRate: number;
  /** Share of requests whose connection is reset during the response. */
  resetRate: number;
  /** Share of requests whose response body is cut short. */
  truncateRate: number;
  /** Delay added before forwarding each request, in milliseconds. */
  latencyMs: number;
  /** Extra delay drawn uniformly from 0 to this many milliseconds. */
  latencyJitterMs: number;
}

export type DownMode = 'reset' | 'unavailable';

export interface FaultCounters {
  /** Requests received, including those that were faulted or rejected while down. */
  requests: number;
  /** Requests sent on to the upstream server. */
  forwarded: number;
  throttled: number;
  tooManyRequests: number;
  /** Resets halfway through a response body. */
  resetsInBody: number;
  /** Resets after the server answered but before the response headers reached the client. */
  resetsBeforeHeaders: number;
  truncated: number;
  /** Requests rejected while the proxy was taken down. */
  rejectedWhileDown: number;
}

export interface RecordedRequest {
  method: string;
  path: string;
  /** The request body as UTF-8, when `recordBodies` is on and the body is at most 64 KiB. */
  body?: string;
  /** The fault applied, or `none`. */
  fault: FaultKind | 'none' | 'down';
}

export type FaultKind = 'throttle' | 'tooManyRequests' | 'reset' | 'truncate';

export interface FaultProxyOptions {
  /** The server to forward to, such as `http://127.0.0.1:9000`. */
  upstream: string;
  flavor: FaultFlavor;
  /** Seed of the fault draws; defaults to 1. */
  seed?: number;
  faults?: Partial<FaultSettings>;
  /** Keep the bodies of small requests in `requests()`, for token services whose request body shows which token was sent. */
  recordBodies?: boolean;
  /** A drawn fault applies only when this returns true for it; defaults to every request and kind. */
  appliesTo?: (method: string, path: string, kind: FaultKind) => boolean;
}

export interface FaultProxy {
  /** `http://127.0.0.1:PORT`. */
  endpoint: string;
  settings(): FaultSettings;
  /** Changes some settings; the others keep their values. */
  setFaults(faults: Partial<FaultSettings>): void;
  /** Turns every fault and the latency off. */
  clearFaults(): void;
  takeDown(mode?: DownMode): void;
  bringUp(): void;
  readonly isDown: boolean;
  counters(): FaultCounters;
  /** Total of injected faults of every kind, rejections while down included. */
  injectedFaults(): number;
  requests(): RecordedRequest[];
  stop(): Promise<void>;
}

const NO_FAULTS: FaultSettings = { throttleRate: 0, tooManyRequestsRate: 0, resetRate: 0, truncateRate: 0, latencyMs: 0, latencyJitterMs: 0 };
const MAX_RECORDED_BODY_BYTES = 64 * 1024;
const MAX_RECORDED_REQUESTS = 10_000;

/** A seeded 32-bit xorshift generator returning numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
}

function validateSettings(settings: FaultSettings): void {
  for (const name of ['throttleRate', 'tooManyRequestsRate', 'resetRate', 'truncateRate'] as const) {
    const value = settings[name];
    if (!(value >= 0 && value <= 1)) throw new RangeError(`invalid ${name} ${value}: expected a share from 0 to 1`);
  }
  const total = settings.throttleRate + settings.tooManyRequestsRate + settings.resetRate + settings.truncateRate;
  if (total > 1) throw new RangeError(`invalid fault shares: together they are ${total}, more than 1`);
  for (const name of ['latencyMs', 'latencyJitterMs'] as const) {
    if (!(settings[name] >= 0)) throw new RangeError(`invalid ${name} ${settings[name]}: expected milliseconds >= 0`);
  }
}

/** Builds the error response of the given API for a 503 or 429. */
function errorResponse(flavor: FaultFlavor, status: 503 | 429, method: string): { headers: Record<string, string>; body: string } {
  const requestId = `fault-proxy-${randomBytes(6).toString('hex')}`;
  let contentType: string;
  let body: string;

  if (flavor === 's3') {
    // S3 throttles with 503 SlowDown; 429 is not an S3 status, but S3-compatible servers send it with the same code.
    contentType = 'application/xml';
    body =
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      `<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>${requestId}</RequestId><HostId>fault-proxy</HostId></Error>`;
  } else if (flavor === 'gcs') {
    contentType = 'application/json; charset=UTF-8';
    const reason = status === 429 ? 'rateLimitExceeded' : 'backendError';
    const message = status === 429 ? 'The rate of requests exceeds the rate limit. Please reduce the rate of requests.' : 'We encountered an internal error. Please try again.';
    body = JSON.stringify({ error: { code: status, message, errors: [{ domain: status === 429 ? 'usageLimits' : 'global', reason, message }] } });
  } else {
    contentType = 'application/json; charset=UTF-8';
    body = JSON.stringify({ error: 'temporarily_unavailable', error_description: `injected HTTP ${status} by the test fault proxy` });
  }

  const headers: Record<string, string> = { 'content-type': contentType, 'x-amz-request-id': requestId, 'x-guploader-uploadid': requestId };
  if (status === 429) headers['retry-after'] = '1';
  // A HEAD response carries no body, as a real server's would not.
  return { headers, body: method === 'HEAD' ? '' : body };
}

export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(options.upstream);
  if (upstream.protocol !== 'http:' || !['127.0.0.1', 'localhost', '[::1]'].includes(upstream.hostname)) {
    throw new Error(`fault proxy upstream ${options.upstream} must be a plain http:// URL on loopback`);
  }

  let settings: FaultSettings = { ...NO_FAULTS, ...options.faults };
  validateSettings(settings);
  const random = seededRandom(options.seed ?? 1);
  const counters: FaultCounters = {
    requests: 0,
    forwarded: 0,
    throttled: 0,
    tooManyRequests: 0,
    resetsInBody: 0,
    resetsBeforeHeaders: 0,
    truncated: 0,
    rejectedWhileDown: 0,
  };
  const recorded: RecordedRequest[] = [];
  let down: DownMode | undefined;

  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const sockets = new Set<Socket>();

  const drawFault = (method: string, path: string): FaultKind | 'none' => {
    const draw = random();
    let kind: FaultKind | 'none' = 'none';
    if (draw < settings.throttleRate) kind = 'throttle';
    else if (draw < settings.throttleRate + settings.tooManyRequestsRate) kind = 'tooManyRequests';
    else if (draw < settings.throttleRate + settings.tooManyRequestsRate + settings.resetRate) kind = 'reset';
    else if (draw < settings.throttleRate + settings.tooManyRequestsRate + settings.resetRate + settings.truncateRate) kind = 'truncate';

    if (kind !== 'none' && options.appliesTo !== undefined && !options.appliesTo(method, path, kind)) return 'none';
    return kind;
  };

  const record = (entry: RecordedRequest): void => {
    if (recorded.length < MAX_RECORDED_REQUESTS) recorded.push(entry);
  };

  const handle = (request: IncomingMessage, response: ServerResponse): void => {
    counters.requests += 1;
    const method = request.method ?? 'GET';
    const path = request.url ?? '/';

    if (down !== undefined) {
      counters.rejectedWhileDown += 1;
      record({ method, path, fault: 'down' });
      if (down === 'reset') {
        request.socket.resetAndDestroy();
        return;
      }
      request.resume();
      request.on('end', () => sendError(response, 503, method));
      return;
    }

    const fault = drawFault(method, path);
    const entry: RecordedRequest = { method, path, fault };
    record(entry);

    if (fault === 'throttle' || fault === 'tooManyRequests') {
      if (fault === 'throttle') counters.throttled += 1;
      else counters.tooManyRequests += 1;
      // The request body is read first, so that the client sees the answer and not a broken pipe.
      request.resume();
      request.on('end', () => sendError(response, fault === 'throttle' ? 503 : 429, method));
      return;
    }

    const delayMs = settings.latencyMs + (settings.latencyJitterMs > 0 ? random() * settings.latencyJitterMs : 0);
    const forward = (): void => forwardRequest(request, response, fault, entry);
    if (delayMs > 0) setTimeout(forward, delayMs);
    else forward();
  };

  const sendError = (response: ServerResponse, status: 503 | 429, method: string): void => {
    const { headers, body } = errorResponse(options.flavor, status, method);
    response.writeHead(status, { ...headers, 'content-length': Buffer.byteLength(body) });
    response.end(body);
  };

  const forwardRequest = (request: IncomingMessage, response: ServerResponse, fault: FaultKind | 'none', entry: RecordedRequest): void => {
    counters.forwarded += 1;
    const bodyChunks: Buffer[] = [];
    let bodyBytes = 0;

    const upstreamRequest = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: request.method, path: request.url, headers: request.headers, agent },
      (upstreamResponse) => relayResponse(request, response, upstreamResponse, fault),
    );
    upstreamRequest.on('error', (error) => {
      if (!response.headersSent) {
        response.writeHead(502, { 'content-type': 'text/plain' });
        response.end(`the fault proxy could not reach ${upstream.origin}: ${error.message}`);
      } else {
        response.destroy(error);
      }
    });

    request.on('data', (chunk: Buffer) => {
      if (options.recordBodies === true && bodyBytes + chunk.length <= MAX_RECORDED_BODY_BYTES) bodyChunks.push(chunk);
      bodyBytes += chunk.length;
    });
    request.on('end', () => {
      if (options.recordBodies === true && bodyBytes <= MAX_RECORDED_BODY_BYTES) entry.body = Buffer.concat(bodyChunks).toString('utf8');
    });
    request.pipe(upstreamRequest);
    // A client that goes away stops the upstream request too.
    request.on('aborted', () => upstreamRequest.destroy());
    response.on('close', () => {
      if (!response.writableFinished) upstreamRequest.destroy();
    });
  };

  const relayResponse = (request: IncomingMessage, response: ServerResponse, upstreamResponse: IncomingMessage, fault: FaultKind | 'none'): void => {
    const declaredLength = Number(upstreamResponse.headers['content-length'] ?? NaN);
    const hasBody = request.method !== 'HEAD' && (Number.isNaN(declaredLength) || declaredLength > 1);

    if (fault === 'reset' && !hasBody) {
      // The server carried out the request, but its answer is lost.
      counters.resetsBeforeHeaders += 1;
      upstreamResponse.destroy();
      request.socket.resetAndDestroy();
      return;
    }
    if (fault === 'none' || !hasBody) {
      response.writeHead(upstreamResponse.statusCode ?? 502, upstreamResponse.headers);
      upstreamResponse.pipe(response);
      return;
    }

    // Cut at half of the declared length, or after the first chunk when the length is unknown.
    const cutAt = Number.isNaN(declaredLength) ? undefined : Math.floor(declaredLength / 2);
    let sent = 0;
    let cut = false;
    response.writeHead(upstreamResponse.statusCode ?? 502, upstreamResponse.headers);
    response.flushHeaders();

    const finishCut = (): void => {
      cut = true;
      upstreamResponse.destroy();
      const socket = request.socket;
      if (fault === 'reset') {
        counters.resetsInBody += 1;
        // Written bytes are flushed before the reset, so the client sees a partial body first.
        socket.write('', () => socket.resetAndDestroy());
      } else {
        counters.truncated += 1;
        socket.end();
      }
    };

    upstreamResponse.on('data', (chunk: Buffer) => {
      if (cut) return;
      const limit = cutAt ?? sent + Math.floor(chunk.length / 2);
      const room = limit - sent;
      if (chunk.length < room) {
        response.write(chunk);
        sent += chunk.length;
        return;
      }
      if (room > 0) response.write(chunk.subarray(0, room));
      sent += Math.max(room, 0);
      finishCut();
    });
    upstreamResponse.on('end', () => {
      if (!cut) finishCut();
    });
  };

  const server: Server = createServer(handle);
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // Resets leave client sockets in states where Node reports errors on them; they are expected here.
  server.on('clientError', (_error, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    endpoint,
    settings: () => ({ ...settings }),
    setFaults(faults) {
      const next = { ...settings, ...faults };
      validateSettings(next);
      settings = next;
    },
    clearFaults() {
      settings = { ...NO_FAULTS };
    },
    takeDown(mode = 'reset') {
      down = mode;
      // Keep-alive connections would otherwise carry on to the server.
      if (mode === 'reset') for (const socket of sockets) socket.resetAndDestroy();
    },
    bringUp() {
      down = undefined;
    },
    get isDown() {
      return down !== undefined;
    },
    counters: () => ({ ...counters }),
    injectedFaults: () =>
      counters.throttled + counters.tooManyRequests + counters.resetsInBody + counters.resetsBeforeHeaders + counters.truncated + counters.rejectedWhileDown,
    requests: () => recorded.map((entry) => ({ ...entry })),
    async stop() {
      agent.destroy();
      if (!server.listening) return;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        for (const socket of sockets) socket.destroy();
      });
    },
  };
}
