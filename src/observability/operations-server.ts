/**
 * The HTTP endpoint for operators: Prometheus metrics and the health checks
 * that Kubernetes probes and Docker's HEALTHCHECK call.
 *
 * - `GET /metrics`: every registry given, in the Prometheus text format.
 * - `GET /healthz` (liveness): 200 while every liveness check passes. Any
 *   response shows that the event loop runs, and a blocked loop makes the
 *   probe time out, which is the failure the prober sees.
 * - `GET /readyz` (readiness): 200 while every liveness and readiness check
 *   passes.
 * Both health responses are JSON listing each check with a reason, so that
 * `curl` shows why a probe fails. A failing check makes the status 503.
 *
 * The endpoint has no authentication: it binds to loopback by default, and
 * it exposes counts and states, never keys, tokens or file names.
 */

import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import type { Registry } from 'prom-client';

import type { Logger } from './logger.js';
import { promClient } from './metrics.js';

export interface CheckResult {
  ok: boolean;
  /** Reason the check passes or fails, for people reading the probe's response. */
  detail: string;
}

export interface HealthCheck {
  name: string;
  run(): CheckResult;
}

export interface OperationsServerOptions {
  /** TCP port; 0 picks a free port (tests). */
  port: number;
  /** Address to bind, such as 127.0.0.1, 0.0.0.0 or ::. */
  address: string;
  /** Registries exported at /metrics; their metric names must not overlap. */
  registries: () => Registry[];
  liveness: HealthCheck[];
  readiness: HealthCheck[];
  logger: Logger;
}

export interface OperationsServer {
  /** The port bound, useful when 0 was requested. */
  readonly port: number;
  readonly address: string;
  /** Stops accepting connections and closes idle ones; idempotent. */
  close(): Promise<void>;
}

interface NamedResult extends CheckResult {
  name: string;
}

function runChecks(checks: HealthCheck[], logger: Logger): NamedResult[] {
  return checks.map((check) => {
    try {
      return { name: check.name, ...check.run() };
    } catch (error) {
      logger.error({ err: error, check: check.name }, 'health check threw; reporting it as failed');
      return { name: check.name, ok: false, detail: `the check threw: ${(error as Error).message}` };
    }
  });
}

function sendJson(response: ServerResponse, status: number, body: unknown, headOnly: boolean): void {
  const text = `${JSON.stringify(body)}\n`;
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  response.end(headOnly ? undefined : text);
}

function sendHealth(response: ServerResponse, results: NamedResult[], headOnly: boolean): void {
  const ok = results.every((result) => result.ok);
  sendJson(response, ok ? 200 : 503, { status: ok ? 'ok' : 'failing', checks: results }, headOnly);
}

async function sendMetrics(response: ServerResponse, registries: Registry[], headOnly: boolean): Promise<void> {
  const { Registry: RegistryClass } = promClient();
  const merged = RegistryClass.merge(registries);
  const text = await merged.metrics();
  response.writeHead(200, { 'content-type': merged.contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  response.end(headOnly ? undefined : text);
}

/** Starts the server and resolves once it listens; rejects when the port cannot be bound. */
export async function startOperationsServer(options: OperationsServerOptions): Promise<OperationsServer> {
  const { logger } = options;

  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const path = (request.url ?? '/').split('?')[0];
    const headOnly = request.method === 'HEAD';
    if (request.method !== 'GET' && !headOnly) {
      response.writeHead(405, { allow: 'GET, HEAD' });
      response.end();
      return;
    }

    switch (path) {
      case '/metrics':
        await sendMetrics(response, options.registries(), headOnly);
        return;
      case '/healthz':
        sendHealth(response, runChecks(options.liveness, logger), headOnly);
        return;
      case '/readyz':
        sendHealth(response, runChecks([...options.liveness, ...options.readiness], logger), headOnly);
        return;
      default:
        sendJson(response, 404, { error: `no endpoint ${path}: use /metrics, /healthz or /readyz` }, headOnly);
    }
  };

  // `import ... from 'node:http'` would build an ES module namespace of node:http, which reads its
  // lazy WebSocket, CloseEvent and MessageEvent exports and so loads Node's bundled undici: about
  // 25 ms of start-up (Node 24.21, measured on a shared 2-core VM). getBuiltinModule skips that, and
  // calling it here rather than when this module loads keeps node:http out of the start-up snapshot.
  const server: Server = process.getBuiltinModule('node:http').createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      logger.error({ err: error, url: request.url }, 'operations endpoint request failed');
      if (!response.headersSent) response.writeHead(500);
      response.end();
    });
  });
  // Probes open a connection per request; keep-alive sockets would only hold the process at shutdown.
  server.keepAliveTimeout = 1_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      reject(new Error(`cannot listen on ${options.address}:${options.port} for metrics and health checks: ${error.message}; choose another --metrics-port or --metrics-address`, { cause: error }));
    };
    server.once('error', onError);
    server.listen(options.port, options.address, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (error) => logger.error({ err: error }, 'operations endpoint server error'));

  const bound = server.address() as AddressInfo;
  logger.info({ event: 'operations-server-listening', address: bound.address, port: bound.port }, `serving /metrics, /healthz and /readyz on ${bound.address}:${bound.port}`);

  let closing: Promise<void> | undefined;
  return {
    port: bound.port,
    address: bound.address,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }).then(() => logger.info({ event: 'operations-server-stopped' }, 'stopped serving metrics and health checks'));
      return closing;
    },
  };
}
