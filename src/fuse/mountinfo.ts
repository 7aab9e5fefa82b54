/**
 * Parsing of /proc/self/mountinfo, whose lines proc(5) describes: six fixed
 * fields, optional fields, a "-" separator, then the filesystem type, the
 * mount source and the superblock options.
 */

/** The fields of one mountinfo line that the daemon reads. */
export interface MountinfoEntry {
  /** Directory of the filesystem that forms the root of this mount. */
  root: string;
  mountpoint: string;
  fstype: string;
  superOptions: string[];
}

/** Returns the entries of mountinfo text in mount order (the last entry for a path is on top); malformed lines are skipped. */
export function parseMountinfo(text: string): MountinfoEntry[] {
  const entries: MountinfoEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-');
    if (separator < 5 || fields.length < separator + 4) continue;

    entries.push({
      root: decodeMountinfoPath(fields[3]!),
      mountpoint: decodeMountinfoPath(fields[4]!),
      fstype: fields[separator + 1]!,
      superOptions: fields[separator + 3]!.split(','),
    });
  }
  return entries;
}

/** Decodes the octal escapes (\040 for a space) that mountinfo uses in paths. */
function decodeMountinfoPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}
