/**
 * Rules that map between file names and object keys.
 *
 * A path inside the mount is a '/'-joined list of names ('' is the root). The
 * object key of a file is `prefix + path`; the keys of a directory's contents
 * start with `prefix + path + '/'`. A key is reachable only when every segment
 * of it is a valid file name, so that no two keys map to one path and no path
 * leaves the mounted prefix.
 */

export const NAME_MAX_BYTES = 255;

export type InvalidNameReason = 'empty' | 'dot' | 'dot-dot' | 'too-long' | 'nul' | 'slash';

/** Returns why `name` cannot be one path segment, or undefined when it can. */
export function invalidNameReason(name: string): InvalidNameReason | undefined {
  if (name === '') return 'empty';
  if (name === '.') return 'dot';
  if (name === '..') return 'dot-dot';
  if (name.includes('\u0000')) return 'nul';
  if (name.includes('/')) return 'slash';
  if (Buffer.byteLength(name, 'utf8') > NAME_MAX_BYTES) return 'too-long';
  return undefined;
}

export function childPath(parentPath: string, name: string): string {
  return parentPath === '' ? name : `${parentPath}/${name}`;
}

export function parentPathOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

export function baseNameOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** Returns whether `path` is `ancestor` or lies below it. */
export function isSameOrDescendant(path: string, ancestor: string): boolean {
  if (ancestor === '') return true;
  return path === ancestor || path.startsWith(`${ancestor}/`);
}

/** Key naming rules of one mount: the mounted prefix applied to paths. */
export class KeyMapper {
  constructor(readonly prefix: string) {}

  fileKey(path: string): string {
    return this.prefix + path;
  }

  /** Prefix of the keys inside a directory; it is also the key of its marker object. */
  directoryPrefix(path: string): string {
    return path === '' ? this.prefix : `${this.prefix}${path}/`;
  }
}
