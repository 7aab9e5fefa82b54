/**
 * The S3 client's HTTP handler: undici for downloads, listings and small
 * requests, node:http for uploads of large bodies.
 *
 * undici delivers a response body as views of the socket's reads, while
 * node:http's parser copies every body chunk into a buffer of its own. The
 * AWS SDK read 1 GiB from MinIO in parallel 8 MiB ranges on a 2-core VM,
 * three rounds each. With undici it used 0.98 to 1.27 s of CPU and read 917
 * to 1,121 MiB/s. With node:http it used 1.30 to 1.54 s and read 754 to 891
 * MiB/s. Sequential 4 KiB PUTs and GETs cost 5 to 18 % less CPU per request.
 *
 * Uploads of large bodies (multipart parts, which grow to hundreds of MiB)
 * stay on node:http. undici's headers timeout starts when the request is
 * dispatched, so a part that takes longer than the timeout to send over a
 * slow link would fail although bytes keep moving. node:http's socket
 * timeout counts only idle time, in either direction.
 */

import { Agent as HttpsAgent } from 'node:https';

import { NodeHttpHandler } from '@smithy/node-http-handler';
import { UndiciHttpHandler } from '@smithy/undici-http-handler';
import type { HttpHandlerOptions, RequestHandlerMetadata } from '@smithy/types';

import { agentOptions } from './undici-options.js';

/** The SDK's request and response classes, which both handlers take and return. */
type SdkHttpRequest = Parameters<NodeHttpHandler['handle']>[0];
type SdkHttpResponse = Awaited<ReturnType<NodeHttpHandler['handle']>>['response'];

/** Request bodies larger than this go through node:http: at 1 Mbit/s, 1 MiB takes about 8 s to send. */
const LARGE_BODY_BYTES = 1024 * 1024;

export interface S3HttpHandlerOptions {
  /** Connections per endpoint, for each of the two pools. */
  maxSockets: number;
  /** Time allowed to open a connection, in milliseconds. */
  connectionTimeoutMs: number;
  /** A request fails when no response headers or no body bytes arrive for this long, in milliseconds. */
  requestTimeoutMs: number;
}

export class S3HttpHandler {
  readonly metadata: RequestHandlerMetadata = { handlerProtocol: 'http/1.1' };

  private readonly undici: UndiciHttpHandler;
  private uploadsHandler: NodeHttpHandler | undefined;
  private readonly options: S3HttpHandlerOptions;

  constructor(options: S3HttpHandlerOptions) {
    this.options = options;
    // Passed as options, the agent is created on the first request, after a start from the snapshot.
    this.undici = new UndiciHttpHandler({
      dispatcher: agentOptions({ connections: options.maxSockets, connectTimeoutMs: options.connectionTimeoutMs, idleTimeoutMs: options.requestTimeoutMs }),
    });
  }

  handle(request: SdkHttpRequest, options?: HttpHandlerOptions): Promise<{ response: SdkHttpResponse }> {
    return this.handlerFor(request).handle(request, options);
  }

  /** Closes both connection pools. Requests in flight fail. */
  destroy(): void {
    this.undici.destroy();
    this.uploadsHandler?.destroy();
  }

  private handlerFor(request: SdkHttpRequest): UndiciHttpHandler | NodeHttpHandler {
    const body: unknown = request.body;
    if (body === undefined || body === null || typeof body === 'string') return this.undici;
    if (body instanceof Uint8Array) return body.byteLength > LARGE_BODY_BYTES ? this.uploads() : this.undici;

    // A stream has no length to check, and node:http's idle timeout suits any size.
    return this.uploads();
  }

  /**
   * Returns the node:http handler, created for the first large body. Loading
   * node:http and node:https costs about 5 ms in a CPU profile, which a
   * mount's start does not wait for.
   */
  private uploads(): NodeHttpHandler {
    this.uploadsHandler ??= new NodeHttpHandler({
      // Not `import { Agent } from 'node:http'`: an ES module import of node:http reads its lazy WebSocket
      // export and so loads Node's bundled undici, about 25 ms of start-up with Node 24.21. Fetched here,
      // not when this module loads, because node:http cannot be loaded into the start-up snapshot.
      httpAgent: new (process.getBuiltinModule('node:http').Agent)({ keepAlive: true, maxSockets: this.options.maxSockets }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: this.options.maxSockets }),
      connectionTimeout: this.options.connectionTimeoutMs,
      socketTimeout: this.options.requestTimeoutMs,
    });
    return this.uploadsHandler;
  }
}
