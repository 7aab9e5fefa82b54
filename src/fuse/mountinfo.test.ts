import { describe, expect, it } from 'vitest';

import { parseMountinfo } from './mountinfo.js';

describe('parseMountinfo', () => {
  it('reads fields around optional ones', () => {
    const text = '36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue\n';

    expect(parseMountinfo(text)).toEqual([{ root: '/mnt1', mountpoint: '/mnt2', fstype: 'ext3', superOptions: ['rw', 'errors=continue'] }]);
  });

  it('decodes octal escapes in paths', () => {
    const text = '40 20 0:50 /a\\040b /tmp/my\\040data\\134x rw - fuse.bucketmount bucketmount rw,user_id=0\n';

    const [entry] = parseMountinfo(text);
    expect(entry?.root).toBe('/a b');
    expect(entry?.mountpoint).toBe('/tmp/my data\\x');
  });

  it('keeps mount order and skips malformed lines', () => {
    const text = [
      '1 0 0:1 / /data rw - fuse.bucketmount first rw',
      'garbage',
      '2 0 0:2 / /short rw - tmpfs',
      '3 0 0:3 / /data rw - fuse.bucketmount second rw',
      '',
    ].join('\n');

    expect(parseMountinfo(text).map((entry) => `${entry.mountpoint} ${entry.fstype}`)).toEqual(['/data fuse.bucketmount', '/data fuse.bucketmount']);
  });
});
