/**
 * Direct object access for the SDK ceiling and for seeding, with one
 * interface over S3 (the AWS SDK) and GCS (the JSON API over fetch).
 *
 * The ceiling client goes through the counting proxy with the web identity's
 * credentials. The administrator side (seeding, size checks) goes straight to
 * the server, so that it is never counted.
 */

import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';

import { DeleteObjectsCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

import { GCS_BUCKET, S3_BUCKET, type GcsEnvironment, type S3Environment } from './servers.js';

export const BLOCK_BYTES = 8 * 1024 * 1024;
export const IN_FLIGHT = 8;

export interface CeilingClient {
  /** Reads bytes [start, end) in one request and returns how many arrived. */
  getRange(key: string, start: number, end: number): Promise<number>;
  /** Reads a whole object in one request and returns its length. */
  getObject(key: string): Promise<number>;
  /** Uploads a local file in BLOCK_BYTES parts (S3: IN_FLIGHT parts at a time; GCS: resumable, one chunk at a time). */
  uploadFile(key: string, path: string): Promise<void>;
  putObject(key: string, body: Buffer): Promise<void>;
  /** Lists one page; returns the number of entries (objects and prefixes) and the next page token. */
  listPage(prefix: string, delimiter: string | undefined, pageToken: string | undefined): Promise<{ entries: number; next: string | undefined }>;
  /** Time of the credential exchange that this client was built with. */
  exchangeMs: number;
  serverBytes(): number;
  close(): void;
}

export interface AdminClient {
  putObject(key: string, body: Buffer): Promise<void>;
  uploadFile(key: string, path: string): Promise<void>;
  /** Size of the object, or undefined when it does not exist. */
  objectSize(key: string): Promise<number | undefined>;
  /** Deletes every object whose key starts with `prefix` and returns how many there were. */
  deletePrefix(prefix: string): Promise<number>;
}

async function drain(body: unknown): Promise<number> {
  let length = 0;
  for await (const chunk of body as AsyncIterable<Uint8Array>) length += chunk.length;
  return length;
}

export async function s3CeilingClient(environment: S3Environment): Promise<CeilingClient> {
  const { client, exchangeMs } = await environment.webIdentityClient();
  return {
    exchangeMs,
    getRange: async (key, start, end) => {
      const response = await client.send(new GetObjectCommand({ Bucket: S3_BUCKET, Key: key, Range: `bytes=${start}-${end - 1}` }));
      return drain(response.Body);
    },
    getObject: async (key) => drain((await client.send(new GetObjectCommand({ Bucket: S3_BUCKET, Key: key }))).Body),
    uploadFile: async (key, path) => {
      await new Upload({ client, params: { Bucket: S3_BUCKET, Key: key, Body: createReadStream(path) }, partSize: BLOCK_BYTES, queueSize: IN_FLIGHT }).done();
    },
    putObject: async (key, body) => {
      await client.send(new PutObjectCommand({ Bucket: S3_BUCKET, Key: key, Body: body }));
    },
    listPage: async (prefix, delimiter, pageToken) => {
      const page = await client.send(new ListObjectsV2Command({ Bucket: S3_BUCKET, Prefix: prefix, Delimiter: delimiter, ContinuationToken: pageToken }));
      return { entries: (page.Contents?.length ?? 0) + (page.CommonPrefixes?.length ?? 0), next: page.NextContinuationToken };
    },
    serverBytes: () => environment.proxy.bytesFromServer(),
    close: () => client.destroy(),
  };
}

export function s3AdminClient(environment: S3Environment): AdminClient {
  const client: S3Client = environment.adminClient;
  return {
    putObject: async (key, body) => {
      await client.send(new PutObjectCommand({ Bucket: S3_BUCKET, Key: key, Body: body }));
    },
    uploadFile: async (key, path) => {
      await new Upload({ client, params: { Bucket: S3_BUCKET, Key: key, Body: createReadStream(path) }, partSize: BLOCK_BYTES, queueSize: IN_FLIGHT }).done();
    },
    objectSize: async (key) => {
      try {
        return (await client.send(new HeadObjectCommand({ Bucket: S3_BUCKET, Key: key }))).ContentLength;
      } catch (error) {
        if ((error as { name?: string }).name === 'NotFound' || (error as { name?: string }).name === 'NoSuchKey') return undefined;
        throw error;
      }
    },
    deletePrefix: async (prefix) => {
      let deleted = 0;
      let token: string | undefined;
      do {
        // A listing page contains at most 1,000 keys, the limit of one DeleteObjects request.
        const page = await client.send(new ListObjectsV2Command({ Bucket: S3_BUCKET, Prefix: prefix, ContinuationToken: token }));
        const keys = (page.Contents ?? []).map((object) => ({ Key: object.Key }));
        if (keys.length > 0) {
          const result = await client.send(new DeleteObjectsCommand({ Bucket: S3_BUCKET, Delete: { Objects: keys, Quiet: true } }));
          const failures = result.Errors ?? [];
          if (failures.length > 0) throw new Error(`deleting ${prefix}* failed for ${failures.length} keys, the first ${failures[0]!.Key}: ${failures[0]!.Message}`);
          deleted += keys.length;
        }
        token = page.NextContinuationToken;
      } while (token !== undefined);
      return deleted;
    },
  };
}

async function expectOk(response: Response, what: string): Promise<Response> {
  if (!response.ok) throw new Error(`${what} failed with HTTP ${response.status}: ${(await response.text()).slice(0, 300)}`);
  return response;
}

/** Uploads a file with a resumable upload session, one BLOCK_BYTES chunk after another. */
async function gcsResumableUpload(endpoint: string, headers: Record<string, string>, key: string, path: string): Promise<void> {
  const initiated = await expectOk(
    await fetch(`${endpoint}/upload/storage/v1/b/${GCS_BUCKET}/o?uploadType=resumable&name=${encodeURIComponent(key)}`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ name: key }),
    }),
    `starting the resumable upload of ${key}`,
  );
  const session = initiated.headers.get('location');
  if (session === null) throw new Error(`the resumable upload of ${key} returned no session location`);

  const file = await open(path, 'r');
  try {
    const size = (await file.stat()).size;
    const buffer = Buffer.alloc(BLOCK_BYTES);
    for (let offset = 0; offset < size || size === 0; offset += BLOCK_BYTES) {
      const { bytesRead } = await file.read(buffer, 0, BLOCK_BYTES, offset);
      const last = offset + bytesRead >= size;
      const range = bytesRead === 0 ? `bytes */${size}` : `bytes ${offset}-${offset + bytesRead - 1}/${last ? size : '*'}`;
      const response = await fetch(session, { method: 'PUT', headers: { ...headers, 'content-range': range }, body: buffer.subarray(0, bytesRead) });
      if (!(response.ok || response.status === 308)) await expectOk(response, `uploading ${key} at offset ${offset}`);
      await response.arrayBuffer();
      if (last) break;
    }
  } finally {
    await file.close();
  }
}

export async function gcsCeilingClient(environment: GcsEnvironment): Promise<CeilingClient> {
  const source = environment.gcp.staticTokenSource();
  const started = performance.now();
  await source.start();
  const exchangeMs = performance.now() - started;
  const token = (await source.current()).accessToken;
  const headers = { authorization: `Bearer ${token}` };
  const endpoint = environment.authorizedProxy.endpoint;
  const objectUrl = (key: string): string => `${endpoint}/storage/v1/b/${GCS_BUCKET}/o/${encodeURIComponent(key)}?alt=media`;

  return {
    exchangeMs,
    getRange: async (key, start, end) => {
      const response = await expectOk(await fetch(objectUrl(key), { headers: { ...headers, range: `bytes=${start}-${end - 1}` } }), `reading ${key}`);
      return (await response.arrayBuffer()).byteLength;
    },
    getObject: async (key) => {
      const response = await expectOk(await fetch(objectUrl(key), { headers }), `reading ${key}`);
      return (await response.arrayBuffer()).byteLength;
    },
    uploadFile: (key, path) => gcsResumableUpload(endpoint, headers, key, path),
    putObject: async (key, body) => {
      const response = await fetch(`${endpoint}/upload/storage/v1/b/${GCS_BUCKET}/o?uploadType=media&name=${encodeURIComponent(key)}`, { method: 'POST', headers, body });
      await (await expectOk(response, `writing ${key}`)).arrayBuffer();
    },
    listPage: async (prefix, delimiter, pageToken) => {
      const url = new URL(`${endpoint}/storage/v1/b/${GCS_BUCKET}/o`);
      url.searchParams.set('prefix', prefix);
      url.searchParams.set('maxResults', '1000');
      if (delimiter !== undefined) url.searchParams.set('delimiter', delimiter);
      if (pageToken !== undefined) url.searchParams.set('pageToken', pageToken);
      const page = (await (await expectOk(await fetch(url, { headers }), `listing ${prefix}`)).json()) as { items?: unknown[]; prefixes?: unknown[]; nextPageToken?: string };
      return { entries: (page.items?.length ?? 0) + (page.prefixes?.length ?? 0), next: page.nextPageToken };
    },
    serverBytes: () => environment.authorizedProxy.bytesFromServer(),
    close: () => undefined,
  };
}

export function gcsAdminClient(environment: GcsEnvironment): AdminClient {
  const endpoint = environment.gcp.gcs.endpoint;
  return {
    putObject: async (key, body) => {
      const response = await fetch(`${endpoint}/upload/storage/v1/b/${GCS_BUCKET}/o?uploadType=media&name=${encodeURIComponent(key)}`, { method: 'POST', body });
      await (await expectOk(response, `seeding ${key}`)).arrayBuffer();
    },
    uploadFile: (key, path) => gcsResumableUpload(endpoint, {}, key, path),
    objectSize: async (key) => {
      const response = await fetch(`${endpoint}/storage/v1/b/${GCS_BUCKET}/o/${encodeURIComponent(key)}`);
      if (response.status === 404) {
        await response.arrayBuffer();
        return undefined;
      }
      const metadata = (await (await expectOk(response, `reading the metadata of ${key}`)).json()) as { size?: string };
      return Number(metadata.size);
    },
    deletePrefix: async (prefix) => {
      let deleted = 0;
      let token: string | undefined;
      do {
        const query = new URLSearchParams({ prefix, fields: 'items(name),nextPageToken', ...(token !== undefined ? { pageToken: token } : {}) });
        const page = (await (await expectOk(await fetch(`${endpoint}/storage/v1/b/${GCS_BUCKET}/o?${query}`), `listing ${prefix}*`)).json()) as {
          items?: Array<{ name: string }>;
          nextPageToken?: string;
        };
        for (const { name } of page.items ?? []) {
          const response = await fetch(`${endpoint}/storage/v1/b/${GCS_BUCKET}/o/${encodeURIComponent(name)}`, { method: 'DELETE' });
          await (await expectOk(response, `deleting ${name}`)).arrayBuffer();
          deleted += 1;
        }
        token = page.nextPageToken;
      } while (token !== undefined);
      return deleted;
    },
  };
}
