/**
 * Continuation tokens of stores that page listings themselves (the in-memory
 * store, and the GCS store, which cuts pages by key position so that pages
 * stay within `maxKeys` on GCS and on its emulator alike).
 *
 * A token is opaque to callers: base64url of a small JSON array, so that a
 * corrupted or foreign token is detected rather than misread.
 */

/** Position after which the next listing page starts. */
export interface ListPosition {
  /** The last key, or the last common prefix, of the previous page. */
  after: string;
  /** True when `after` is a common prefix: every key under it was already returned. */
  isPrefix: boolean;
}

export function encodeListPosition(position: ListPosition): string {
  return Buffer.from(JSON.stringify([position.isPrefix ? 'p' : 'k', position.after]), 'utf8').toString('base64url');
}

/** Returns undefined for a token this module did not write; the caller reports it as invalid. */
export function decodeListPosition(token: string): ListPosition | undefined {
  try {
    const decoded: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (Array.isArray(decoded) && decoded.length === 2 && (decoded[0] === 'p' || decoded[0] === 'k') && typeof decoded[1] === 'string') {
      return { after: decoded[1], isPrefix: decoded[0] === 'p' };
    }
  } catch {
    // Not base64url JSON.
  }
  return undefined;
}
