/**
 * Options shared by the daemon's undici connection pools (the S3 client's,
 * the STS client's and the GCS store's media downloads), and the early
 * compilation of undici's HTTP parser that a mount's start would wait for.
 */

import { startupSnapshot } from 'node:v8';

import type { Agent } from 'undici';

import type { Logger } from '../observability/logger.js';
import llhttp from './llhttp-wasm.cjs';

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

/** The WebAssembly global, which TypeScript's libraries without the DOM declare as types only. */
export type WebAssemblyGlobal = { compile(bytes: Uint8Array): Promise<unknown>; validate(bytes: Uint8Array): boolean };

let compiledParser: Promise<unknown> | undefined;

/**
 * Starts compiling undici's HTTP parser (llhttp, WebAssembly) on V8's
 * background threads. undici compiles it synchronously on its first
 * connection, which a mount's start waits for. V8 keeps a module compiled
 * from the same bytes and hands that code to undici's compilation instead of
 * compiling again. In CPU profiles of starts from the snapshot, undici's
 * compilation took 0.6 to 2 ms of the main thread, and none with this. When
 * the sharing fails, undici compiles the same parser itself. Returns the
 * compilation, which never rejects, or undefined when nothing was started.
 */
export function precompileHttpParser(logger: Logger): Promise<unknown> | undefined {
  // undici uses the parser without SIMD when this is set, so there is nothing to share. A snapshot
  // cannot contain a WebAssembly module, so the warm-up that builds one compiles nothing.
  if (compiledParser !== undefined || process.env.UNDICI_NO_WASM_SIMD === '1' || startupSnapshot.isBuildingSnapshot()) return undefined;

  const failed = (error: unknown): undefined => {
    logger.debug({ err: error }, "precompiling undici's HTTP parser failed; undici compiles it on its first connection");
    return undefined;
  };
  try {
    // Read when called: a snapshot's build has no WebAssembly global.
    const webAssembly = (globalThis as unknown as { WebAssembly?: WebAssemblyGlobal }).WebAssembly;
    compiledParser = webAssembly?.compile(llhttp.llhttpSimdWasm()).catch(failed);
  } catch (error) {
    failed(error);
  }
  return compiledParser;
}
