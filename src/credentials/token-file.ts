/**
 * Reads the web identity token (a Kubernetes projected service-account JWT)
 * from its file.
 *
 * The file is read again at every exchange, never cached: kubelet rotates the
 * token by writing a new timestamped directory and swapping the `..data`
 * symlink that `token` points through, so the path stays the same while the
 * content changes. Symlinks are followed.
 *
 * The payload is decoded without verifying the signature, only to describe
 * the token in errors and logs (issuer, audience, subject, expiry). The token
 * itself never appears in an error message.
 */

import { readFile, stat } from 'node:fs/promises';

import { TokenFileError } from './errors.js';

/**
 * Projected service-account tokens are about 1 KiB. A file far larger than
 * that is not a token, and reading it whole on every exchange would waste
 * memory, so the read stops at this size.
 */
export const MAX_TOKEN_FILE_BYTES = 64 * 1024;

/** Claims decoded from a token without verification, for diagnostics only. */
export interface TokenClaims {
  issuer?: string;
  audience: string[];
  subject?: string;
  issuedAt?: Date;
  expiresAt?: Date;
}

export interface WebIdentityToken {
  /** The JWT as read from the file, trimmed of surrounding whitespace. */
  token: string;
  path: string;
  claims: TokenClaims;
}

/** Reads and checks the token file; rejects with a `TokenFileError` that names the path. */
export async function readTokenFile(path: string, signal?: AbortSignal): Promise<WebIdentityToken> {
  let size: number;
  try {
    const status = await stat(path);
    if (status.isDirectory()) {
      throw new TokenFileError(path, {
        code: 'TokenFileUnreadable',
        explanation: `the web identity token file ${path} is a directory; set the token file to the "token" file inside it`,
      });
    }
    size = status.size;
  } catch (error) {
    throw tokenFileAccessError(path, error);
  }

  if (size > MAX_TOKEN_FILE_BYTES) {
    throw new TokenFileError(path, {
      code: 'TokenFileMalformed',
      explanation:
        `the web identity token file ${path} is ${size} bytes, larger than the ${MAX_TOKEN_FILE_BYTES} bytes ` +
        'a service-account token can be; check that the path points at the projected token',
    });
  }

  let content: string;
  try {
    content = await readFile(path, { encoding: 'utf8', signal });
  } catch (error) {
    throw tokenFileAccessError(path, error);
  }

  const token = content.trim();
  if (token === '') {
    throw new TokenFileError(path, {
      code: 'TokenFileEmpty',
      retryable: true,
      explanation: `the web identity token file ${path} is empty; check that kubelet has written the projected token`,
    });
  }

  const claims = decodeTokenClaims(token);
  if (claims === undefined) {
    throw new TokenFileError(path, {
      code: 'TokenFileMalformed',
      explanation:
        `the web identity token file ${path} does not contain a JWT (expected three base64url parts ` +
        'separated by dots with a JSON payload); check that the path points at the projected service-account token',
    });
  }

  return { token, path, claims };
}

function tokenFileAccessError(path: string, error: unknown): unknown {
  if (error instanceof TokenFileError) {
    return error;
  }
  const code = (error as NodeJS.ErrnoException).code;

  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new TokenFileError(path, {
      code: 'TokenFileMissing',
      retryable: true,
      cause: error,
      explanation:
        `the web identity token file ${path} does not exist; check the projected service-account token ` +
        'volume mount and the configured token file path (AWS_WEB_IDENTITY_TOKEN_FILE)',
    });
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new TokenFileError(path, {
      code: 'TokenFileUnreadable',
      cause: error,
      explanation: `the web identity token file ${path} is not readable by this process (${code}); check the file mode and the user the daemon runs as`,
    });
  }
  if (code === 'ABORT_ERR') {
    return new TokenFileError(path, { code: 'Aborted', cause: error, explanation: `reading ${path} was aborted` });
  }
  return new TokenFileError(path, {
    code: 'TokenFileUnreadable',
    retryable: true,
    cause: error,
    explanation: `reading the web identity token file ${path} failed: ${(error as Error).message}`,
  });
}

/**
 * Decodes the payload of a compact JWS without verifying it. Returns
 * undefined when the text is not three base64url segments with a JSON object
 * as the payload.
 */
export function decodeTokenClaims(token: string): TokenClaims | undefined {
  const segments = token.split('.');
  if (segments.length !== 3 || segments.some((segment) => !/^[A-Za-z0-9_-]+$/.test(segment))) {
    return undefined;
  }

  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(segments[1] ?? '', 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
    return undefined;
  }

  const record = payload as Record<string, unknown>;
  const audience = typeof record.aud === 'string' ? [record.aud] : Array.isArray(record.aud) ? record.aud.filter((value) => typeof value === 'string') : [];
  return {
    issuer: typeof record.iss === 'string' ? record.iss : undefined,
    audience,
    subject: typeof record.sub === 'string' ? record.sub : undefined,
    issuedAt: typeof record.iat === 'number' ? new Date(record.iat * 1000) : undefined,
    expiresAt: typeof record.exp === 'number' ? new Date(record.exp * 1000) : undefined,
  };
}

/** Returns true when the token's `exp` claim is at or before `now`, and false when it has no `exp`. */
export function isTokenExpired(claims: TokenClaims, now: Date): boolean {
  return claims.expiresAt !== undefined && claims.expiresAt.getTime() <= now.getTime();
}

/** Describes a token by its claims, such as `issuer "https://...", audience "sts.amazonaws.com", subject "...", expires at ...`. */
export function describeTokenClaims(claims: TokenClaims): string {
  const parts = [
    `issuer ${JSON.stringify(claims.issuer ?? '(none)')}`,
    `audience ${claims.audience.length === 0 ? '(none)' : claims.audience.map((value) => JSON.stringify(value)).join(', ')}`,
    `subject ${JSON.stringify(claims.subject ?? '(none)')}`,
  ];
  if (claims.expiresAt !== undefined) {
    parts.push(`expires at ${claims.expiresAt.toISOString()}`);
  }
  return parts.join(', ');
}
