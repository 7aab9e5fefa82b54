/**
 * A reverse proxy on 127.0.0.1 that puts GCS authorization in front of
 * fake-gcs-server, which accepts every request.
 *
 * Each request needs `Authorization: Bearer TOKEN` with a token minted by the
 * IAM Credentials fake and not yet expired. Otherwise the proxy responds with
 * 401 and the JSON error body of the GCS JSON API. The token's service account
 * then needs a grant on the bucket named in the path: read for GET and HEAD,
 * write for everything else, and for a rewrite read on the source and write
 * on the destination. Otherwise the response is 403. Requests whose path names no
 * bucket (bucket listing and creation, batch requests) are rejected with 403,
 * because tests create buckets on the emulator directly.
 *
 * Bodies stream in both directions without buffering, so large uploads and
 * downloads pass at the speed of the sockets. `Location` headers that point at
 * the emulator are rewritten to point at the proxy. With `anonymous` the proxy
 * checks nothing and only forwards.
 */

import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream';

import type { GcpFakes } from './gcp-fakes.js';

export interface GcsAuthProxy {
  /** `http://127.0.0.1:PORT`, to use as the storage client's API endpoint. */
  endpoint: string;
  /** Number of requests rejected with 401 or 403 so far. */
  rejectedCount(): number;
  /** Number of distinct access tokens that authenticated at least one request so far. */
  acceptedTokenCount(): number;
  stop(): Promise<void>;
}

export interface GcsAuthProxyOptions {
  /** The emulator's endpoint, `http://127.0.0.1:PORT`. */
  upstream: string;
  fakes: Pick<GcpFakes, 'lookupAccessToken' | 'canAccessBucket'>;
  /**
   * Forward every request without checking credentials. The benchmark puts a
   * peer mount that cannot use the GCP fakes (it reads anonymously) behind
   * this kind of proxy, so that its requests take the same path as the
   * daemon's.
   */
  anonymous?: boolean;
}

interface BucketAccess {
  bucket: string;
  write: boolean;
}

/**
 * Returns the buckets a JSON API request touches and the access each needs,
 * or undefined when the path names no bucket.
 */
export function bucketAccessOf(method: string, path: string): BucketAccess[] | undefined {
  const write = method !== 'GET' && method !== 'HEAD';
  const segments = path.split('/').map((segment) => decodeURIComponent(segment));

  // /storage/v1/b/SOURCE/o/NAME/rewriteTo/b/DESTINATION/o/NAME2, and copyTo.
  const rewrite = /^\/storage\/v1\/b\/([^/]+)\/o\/.+\/(?:rewriteTo|copyTo)\/b\/([^/]+)\/o\/.+$/.exec(path);
  if (rewrite !== null) {
    return [
      { bucket: decodeURIComponent(rewrite[1]!), write: false },
      { bucket: decodeURIComponent(rewrite[2]!), write: true },
    ];
  }

  // /storage/v1/b/BUCKET/..., /upload/storage/v1/b/BUCKET/..., /download/storage/v1/b/BUCKET/...
  let offset: number;
  if (segments[1] === 'storage') offset = 0;
  else if (segments[1] === 'upload' || segments[1] === 'download') offset = 1;
  else return undefined;
  if (segments[2 + offset] !== 'v1' || segments[3 + offset] !== 'b') return undefined;
  const bucket = segments[4 + offset];
  if (bucket === undefined || bucket === '') return undefined;
  return [{ bucket, write }];
}

function sendGcsError(response: ServerResponse, status: number, reason: string, message: string, extra: Record<string, string> = {}): void {
  const body = JSON.stringify({ error: { code: status, message, errors: [{ message, domain: 'global', reason, ...extra }] } });
  response.writeHead(status, {
    'content-type': 'application/json; charset=UTF-8',
    'content-length': Buffer.byteLength(body),
    ...(status === 401 ? { 'www-authenticate': 'Bearer realm="https://accounts.google.com/"' } : {}),
  });
  response.end(body);
}

/** Starts the proxy on a free port of 127.0.0.1. */
export async function startGcsAuthProxy(options: GcsAuthProxyOptions): Promise<GcsAuthProxy> {
  const upstream = new URL(options.upstream);
  let rejected = 0;
  let endpoint = '';
  // Kept only in this process's memory, to count renewals; the tokens are never printed.
  const acceptedTokens = new Set<string>();

  const handle = (request: IncomingMessage, response: ServerResponse): void => {
    const method = request.method ?? 'GET';
    if (options.anonymous === true) {
      forward(request, response, method);
      return;
    }

    const url = new URL(request.url ?? '/', 'http://proxy.invalid');

    const bearer = /^Bearer (.+)$/i.exec(request.headers.authorization ?? '')?.[1];
    const minted = bearer === undefined ? undefined : options.fakes.lookupAccessToken(bearer);
    if (minted === undefined) {
      rejected += 1;
      request.resume();
      sendGcsError(response, 401, 'authError', 'Invalid Credentials', { locationType: 'header', location: 'Authorization' });
      return;
    }
    acceptedTokens.add(bearer!);

    const accesses = bucketAccessOf(method, url.pathname);
    if (accesses === undefined) {
      rejected += 1;
      request.resume();
      sendGcsError(response, 403, 'forbidden', `${minted.serviceAccount} does not have access to ${method} ${url.pathname}: the test proxy allows only requests addressed to one bucket.`);
      return;
    }
    void authorizeAndForward(request, response, method, minted.serviceAccount, accesses);
  };

  // GCS answers 404 for a bucket that does not exist before it checks permissions, so the proxy does too.
  const bucketExists = async (bucket: string): Promise<boolean> => {
    const answer = await fetch(`${upstream.origin}/storage/v1/b/${encodeURIComponent(bucket)}`);
    await answer.arrayBuffer();
    return answer.status !== 404;
  };

  const authorizeAndForward = async (
    request: IncomingMessage,
    response: ServerResponse,
    method: string,
    serviceAccount: string,
    accesses: Array<{ bucket: string; write: boolean }>,
  ): Promise<void> => {
    for (const access of accesses) {
      if (!options.fakes.canAccessBucket(serviceAccount, access.bucket, access.write)) {
        if (!(await bucketExists(access.bucket).catch(() => true))) {
          request.resume();
          sendGcsError(response, 404, 'notFound', 'The specified bucket does not exist.');
          return;
        }
        rejected += 1;
        request.resume();
        const permission = access.write ? 'storage.objects.create' : 'storage.objects.get';
        sendGcsError(
          response,
          403,
          'forbidden',
          `${serviceAccount} does not have ${permission} access to the Google Cloud Storage bucket. Permission '${permission}' denied on resource (or it may not exist).`,
        );
        return;
      }
    }
    forward(request, response, method);
  };

  const forward = (request: IncomingMessage, response: ServerResponse, method: string): void => {
    const headers = { ...request.headers, host: upstream.host };
    const upstreamRequest = httpRequest(
      { host: upstream.hostname, port: upstream.port, method, path: request.url, headers },
      (upstreamResponse) => {
        // The client gave up (its request timed out) before the server responded. Drop the response,
        // because pipeline throws on a destroyed stream and would crash the test process.
        if (response.destroyed) {
          upstreamResponse.resume();
          return;
        }
        const responseHeaders = { ...upstreamResponse.headers };
        const location = responseHeaders.location;
        if (typeof location === 'string' && location.startsWith(upstream.origin)) {
          responseHeaders.location = endpoint + location.slice(upstream.origin.length);
        }
        response.writeHead(upstreamResponse.statusCode ?? 502, responseHeaders);
        pipeline(upstreamResponse, response, () => {
          // A client that disconnects mid-body ends both streams; nothing to report.
        });
      },
    );
    upstreamRequest.on('error', (error) => {
      if (!response.headersSent) {
        sendGcsError(response, 502, 'backendError', `the emulator behind the test proxy failed: ${error.message}`);
      } else {
        response.destroy(error);
      }
    });
    pipeline(request, upstreamRequest, (error) => {
      if (error !== undefined && error !== null) upstreamRequest.destroy(error);
    });
  };

  const server: Server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    endpoint,
    rejectedCount: () => rejected,
    acceptedTokenCount: () => acceptedTokens.size,
    stop: async () => {
      if (!server.listening) return;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
