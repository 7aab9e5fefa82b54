/**
 * A test OpenID Connect issuer that replaces the Kubernetes API server's
 * service-account issuer in tests.
 *
 * It serves a discovery document and a JWKS on 127.0.0.1, signs RS256 tokens
 * whose claims look like projected service-account tokens, and writes them to
 * a token directory the way kubelet's AtomicWriter does, so that readers see
 * the same symlink swaps as in a pod. MinIO and the GCP fakes verify tokens
 * against the JWKS served here.
 */

import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readlink, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { exportJWK, generateKeyPair, SignJWT, type JWK, type CryptoKey } from 'jose';

export const DEFAULT_SUBJECT = 'system:serviceaccount:sandbox:bucketmount';

const SIGNING_ALGORITHM = 'RS256';
const DISCOVERY_PATH = '/.well-known/openid-configuration';
// The path the Kubernetes API server uses for its service-account JWKS.
const JWKS_PATH = '/openid/v1/jwks';

export interface OidcIssuerOptions {
  /**
   * The `iss` claim of every minted token, when it should differ from the URL
   * this issuer serves (for tests of an untrusted issuer). Defaults to `issuerUrl`.
   */
  tokenIssuer?: string;
}

export interface MintTokenOptions {
  audience: string | string[];
  /** Defaults to `system:serviceaccount:sandbox:bucketmount`. */
  sub?: string;
  /** Lifetime in seconds from `issuedAt`; defaults to 3600. */
  expiresInSeconds?: number;
  /** Defaults to now. A past time with a short lifetime gives an expired token. */
  issuedAt?: Date;
  /** The `iss` claim for this token only. */
  issuer?: string;
  /**
   * Signs the token with a key that the JWKS never publishes, so verifiers
   * find no public key for its `kid`.
   */
  unpublishedKey?: boolean;
}

export interface OidcIssuer {
  /** `http://127.0.0.1:PORT`, the `issuer` of the discovery document. */
  issuerUrl: string;
  discoveryUrl: string;
  jwksUrl: string;
  /** Key id of the key that signs new tokens. */
  currentKeyId(): string;
  mintToken(options: MintTokenOptions): Promise<string>;
  /** Writes the token kubelet-style under `directory`; returns the path of `directory/token`. */
  writeTokenFile(directory: string, token: string): Promise<string>;
  /** Signs new tokens with a fresh key; `keepOld` (default true) keeps the previous key in the JWKS. */
  rotateSigningKey(options?: { keepOld?: boolean }): Promise<void>;
  /** Number of requests served per path, for tests that check when verifiers fetch the JWKS. */
  requestCount(path: string): number;
  stop(): Promise<void>;
}

interface SigningKey {
  keyId: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

async function createSigningKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(SIGNING_ALGORITHM, { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const keyId = randomUUID();
  return { keyId, privateKey, publicJwk: { ...publicJwk, kid: keyId, alg: SIGNING_ALGORITHM, use: 'sig' } };
}

/** Parses `system:serviceaccount:NAMESPACE:NAME` into its parts, or returns undefined. */
function parseServiceAccountSubject(subject: string): { namespace: string; name: string } | undefined {
  const parts = subject.split(':');
  if (parts.length !== 4 || parts[0] !== 'system' || parts[1] !== 'serviceaccount') {
    return undefined;
  }
  return { namespace: parts[2] ?? '', name: parts[3] ?? '' };
}

/** Starts an issuer on a free port of 127.0.0.1. */
export async function startOidcIssuer(options: OidcIssuerOptions = {}): Promise<OidcIssuer> {
  let signingKey = await createSigningKey();
  let publishedKeys: SigningKey[] = [signingKey];
  const unpublishedKey = await createSigningKey();
  const requestCounts = new Map<string, number>();

  // The URLs are known only after listen(), and the handler runs only after that.
  let issuerUrl = '';

  const sendJson = (response: ServerResponse, status: number, body: unknown): void => {
    const text = JSON.stringify(body);
    response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    response.end(text);
  };

  const handleRequest = (request: IncomingMessage, response: ServerResponse): void => {
    const path = new URL(request.url ?? '/', issuerUrl).pathname;
    requestCounts.set(path, (requestCounts.get(path) ?? 0) + 1);

    if (request.method !== 'GET') {
      sendJson(response, 405, { error: `method ${request.method} not allowed` });
      return;
    }

    if (path === DISCOVERY_PATH) {
      sendJson(response, 200, {
        issuer: issuerUrl,
        jwks_uri: `${issuerUrl}${JWKS_PATH}`,
        response_types_supported: ['id_token'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: [SIGNING_ALGORITHM],
      });
      return;
    }

    if (path === JWKS_PATH) {
      sendJson(response, 200, { keys: publishedKeys.map((key) => key.publicJwk) });
      return;
    }

    sendJson(response, 404, { error: `no such path: ${path}` });
  };

  const server = createServer(handleRequest);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  issuerUrl = `http://127.0.0.1:${port}`;

  const mintToken = async (mint: MintTokenOptions): Promise<string> => {
    const subject = mint.sub ?? DEFAULT_SUBJECT;
    const issuedAtSeconds = Math.floor((mint.issuedAt ?? new Date()).getTime() / 1000);
    const expiresAtSeconds = issuedAtSeconds + (mint.expiresInSeconds ?? 3600);
    const key = mint.unpublishedKey === true ? unpublishedKey : signingKey;

    // Projected service-account tokens carry the pod's namespace and service
    // account under this claim; some verifiers map policies from it.
    const serviceAccount = parseServiceAccountSubject(subject);
    const kubernetesClaim =
      serviceAccount === undefined
        ? undefined
        : { namespace: serviceAccount.namespace, serviceaccount: { name: serviceAccount.name, uid: randomUUID() } };

    const claims: Record<string, unknown> = {};
    if (kubernetesClaim !== undefined) {
      claims['kubernetes.io'] = kubernetesClaim;
    }

    return new SignJWT(claims)
      .setProtectedHeader({ alg: SIGNING_ALGORITHM, kid: key.keyId, typ: 'JWT' })
      .setIssuer(mint.issuer ?? options.tokenIssuer ?? issuerUrl)
      .setSubject(subject)
      .setAudience(mint.audience)
      .setIssuedAt(issuedAtSeconds)
      .setNotBefore(issuedAtSeconds)
      .setExpirationTime(expiresAtSeconds)
      .setJti(randomUUID())
      .sign(key.privateKey);
  };

  const rotateSigningKey = async (rotation: { keepOld?: boolean } = {}): Promise<void> => {
    const next = await createSigningKey();
    publishedKeys = rotation.keepOld === false ? [next] : [...publishedKeys, next];
    signingKey = next;
  };

  const stop = async (): Promise<void> => {
    if (!server.listening) {
      return;
    }
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  };

  return {
    issuerUrl,
    discoveryUrl: `${issuerUrl}${DISCOVERY_PATH}`,
    jwksUrl: `${issuerUrl}${JWKS_PATH}`,
    currentKeyId: () => signingKey.keyId,
    mintToken,
    writeTokenFile,
    rotateSigningKey,
    requestCount: (path) => requestCounts.get(path) ?? 0,
    stop,
  };
}

/** Formats a time the way kubelet names its timestamped payload directories. */
function timestampDirectoryPrefix(now: Date): string {
  const pad = (value: number): string => String(value).padStart(2, '0');
  return (
    `..${now.getUTCFullYear()}_${pad(now.getUTCMonth() + 1)}_${pad(now.getUTCDate())}_` +
    `${pad(now.getUTCHours())}_${pad(now.getUTCMinutes())}_${pad(now.getUTCSeconds())}.`
  );
}

/**
 * Writes `token` into `directory` with the layout and update order of
 * kubelet's AtomicWriter for projected volumes:
 *
 *   directory/..2026_12_04_20_15_30.ab12cd/token   the payload
 *   directory/..data -> ..2026_12_04_20_15_30.ab12cd
 *   directory/token  -> ..data/token
 *
 * A new payload goes into a new timestamped directory, and a `..data_tmp`
 * symlink to it is renamed over `..data`. Because rename is atomic, a reader
 * sees either the old token or the new one. The previous payload directory is
 * removed last. Returns the path of `directory/token`.
 */
export async function writeTokenFile(directory: string, token: string): Promise<string> {
  await mkdir(directory, { recursive: true });

  const dataLink = join(directory, '..data');
  const previousPayload = await readlink(dataLink).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') {
      return undefined;
    }
    throw error;
  });

  const payloadDirectory = await mkdtemp(join(directory, timestampDirectoryPrefix(new Date())));
  await writeFile(join(payloadDirectory, 'token'), token, { mode: 0o600 });

  const temporaryLink = join(directory, '..data_tmp');
  await unlink(temporaryLink).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') {
      throw error;
    }
  });
  await symlink(payloadDirectory.slice(directory.length + 1), temporaryLink);
  await rename(temporaryLink, dataLink);

  const tokenLink = join(directory, 'token');
  try {
    await symlink(join('..data', 'token'), tokenLink);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw error;
    }
  }

  if (previousPayload !== undefined) {
    await rm(join(directory, previousPayload), { recursive: true, force: true });
  }
  return tokenLink;
}
