/**
 * Options shared by the daemon's undici connection pools: the S3 client's,
 * the STS client's and the GCS store's media downloads.
 */

import type { Agent } from 'undici';

/**
 * How long an idle connection stays open for the next request, in
 * milliseconds. undici closes idle connections after 4 s by default, and a
 * mount's reads come in bursts further apart.
 */
const KEEP_ALIVE_MS = 15_000;

/**
 * Largest response header block accepted, in bytes: Node.js's default
 * (`http.maxHeaderSize`). Given explicitly, because without it undici reads
 * `http.maxHeaderSize` on its first connection and so loads node:http, about
 * 3 ms of a mount's start in a CPU profile.
 */
const MAX_HEADER_BYTES = 16 * 1024;

export interface PoolOptions {
  /** Connections per origin. */
  connections?: number;
  /** Time allowed to open a connection, in milliseconds. */
  connectTimeoutMs?: number;
  /** A request fails when no response headers or no body bytes arrive for this long, in milliseconds. */
  idleTimeoutMs: number;
}

/** Returns the options of an undici `Agent` with the daemon's keep-alive and header limit. */
export function agentOptions(options: PoolOptions): Agent.Options {
  return {
    ...(options.connections !== undefined ? { connections: options.connections } : {}),
    ...(options.connectTimeoutMs !== undefined ? { connect: { timeout: options.connectTimeoutMs } } : {}),
    headersTimeout: options.idleTimeoutMs,
    bodyTimeout: options.idleTimeoutMs,
    keepAliveTimeout: KEEP_ALIVE_MS,
    maxHeaderSize: MAX_HEADER_BYTES,
  };
}
