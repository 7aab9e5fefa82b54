/**
 * Typed errors of the credential flows.
 *
 * Every failure of a credential exchange becomes one `CredentialError` that
 * records which step failed (reading the token file, the STS exchange, the IAM
 * impersonation call), a stable `code`, and an `explanation` in plain words
 * that an operator can act on. The original error is kept as `cause`.
 *
 * Messages and explanations never contain the token: they describe it by the
 * claims decoded from it (issuer, audience, subject, expiry) and by the path
 * of the token file, and text returned by a server is scrubbed of the token
 * before it is quoted.
 */

export type CredentialStep = 'token-file' | 'sts' | 'iam' | 'refresher';

export type CredentialErrorCode =
  | 'TokenFileMissing'
  | 'TokenFileUnreadable'
  | 'TokenFileEmpty'
  | 'TokenFileMalformed'
  | 'TokenExpired'
  | 'AudienceMismatch'
  | 'UnknownSigningKey'
  | 'TokenRejected'
  | 'RoleNotFound'
  | 'AccessDenied'
  | 'InvalidRequest'
  | 'EndpointUnreachable'
  | 'EndpointUnknownHost'
  | 'Timeout'
  | 'ServiceUnavailable'
  | 'InvalidResponse'
  | 'Aborted'
  | 'Stopped'
  | 'Unknown';

export interface CredentialErrorOptions {
  code: CredentialErrorCode;
  step: CredentialStep;
  /** Plain-language description of the fault and the change that fixes it. */
  explanation: string;
  /** Whether the same exchange may succeed later without a configuration change. */
  retryable?: boolean;
  /** The error code the remote service returned, such as `InvalidIdentityToken`. */
  serviceCode?: string;
  httpStatus?: number;
  cause?: unknown;
}

export class CredentialError extends Error {
  override readonly name: string = 'CredentialError';
  readonly code: CredentialErrorCode;
  readonly step: CredentialStep;
  readonly explanation: string;
  readonly retryable: boolean;
  readonly serviceCode: string | undefined;
  readonly httpStatus: number | undefined;

  constructor(message: string, options: CredentialErrorOptions) {
    super(message, { cause: options.cause });
    this.code = options.code;
    this.step = options.step;
    this.explanation = options.explanation;
    this.retryable = options.retryable ?? false;
    this.serviceCode = options.serviceCode;
    this.httpStatus = options.httpStatus;
  }
}

/** A failure to read or parse the web identity token file. */
export class TokenFileError extends CredentialError {
  override readonly name = 'TokenFileError';
  readonly path: string;

  constructor(path: string, options: Omit<CredentialErrorOptions, 'step'>) {
    super(options.explanation, { ...options, step: 'token-file' });
    this.path = path;
  }
}

/** A failure of the token exchange at a security token service (AWS STS, MinIO STS, Google STS). */
export class StsExchangeError extends CredentialError {
  override readonly name = 'StsExchangeError';
  readonly endpoint: string;

  constructor(message: string, endpoint: string, options: Omit<CredentialErrorOptions, 'step'>) {
    super(message, { ...options, step: 'sts' });
    this.endpoint = endpoint;
  }
}

/** A failure of a call to an IAM service, such as service account impersonation. */
export class IamCallError extends CredentialError {
  override readonly name = 'IamCallError';
  readonly endpoint: string;

  constructor(message: string, endpoint: string, options: Omit<CredentialErrorOptions, 'step'>) {
    super(message, { ...options, step: 'iam' });
    this.endpoint = endpoint;
  }
}

export function isCredentialError(error: unknown): error is CredentialError {
  return error instanceof CredentialError;
}

/** Replaces every occurrence of `secret` in `text`, so that a server's message can be quoted safely. */
export function redactSecret(text: string, secret: string | undefined): string {
  if (secret === undefined || secret.length < 8) {
    return text;
  }
  return text.split(secret).join('[redacted token]');
}

export interface NetworkFailure {
  code: 'EndpointUnreachable' | 'EndpointUnknownHost' | 'Timeout' | 'Aborted';
  /** A sentence fragment such as "the connection was refused". */
  reason: string;
}

const UNREACHABLE_CODES: Record<string, string> = {
  ECONNREFUSED: 'the connection was refused',
  ECONNRESET: 'the connection was reset',
  EHOSTUNREACH: 'the host is unreachable',
  ENETUNREACH: 'the network is unreachable',
  EPIPE: 'the connection was closed while sending',
  EPROTO: 'the TLS handshake failed',
  UND_ERR_SOCKET: 'the connection was closed',
  CERT_HAS_EXPIRED: 'its TLS certificate has expired',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'its TLS certificate could not be verified',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'it presented a self-signed TLS certificate',
  SELF_SIGNED_CERT_IN_CHAIN: 'it presented a self-signed TLS certificate chain',
};

const UNKNOWN_HOST_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME']);
const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'ESOCKETTIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT']);

/**
 * Classifies an error thrown by an HTTP client before any response arrived
 * (by its Node.js `code` or `name`), or returns undefined when the error
 * came with a response. Errors wrapped as `cause` (as fetch does) are
 * inspected too.
 */
export function classifyNetworkFailure(error: unknown): NetworkFailure | undefined {
  for (let current: unknown = error, depth = 0; current instanceof Error && depth < 4; current = current.cause, depth++) {
    const code = (current as NodeJS.ErrnoException).code;
    const name = current.name;

    if (code !== undefined && code in UNREACHABLE_CODES) {
      return { code: 'EndpointUnreachable', reason: UNREACHABLE_CODES[code] ?? code };
    }
    if (code !== undefined && UNKNOWN_HOST_CODES.has(code)) {
      return { code: 'EndpointUnknownHost', reason: 'its host name does not resolve' };
    }
    if ((code !== undefined && TIMEOUT_CODES.has(code)) || name === 'TimeoutError') {
      return { code: 'Timeout', reason: 'the request timed out' };
    }
    if (name === 'AbortError' || code === 'ABORT_ERR') {
      return { code: 'Aborted', reason: 'the request was aborted' };
    }
  }
  return undefined;
}
