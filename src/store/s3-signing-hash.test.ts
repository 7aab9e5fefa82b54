import { createHash, createHmac } from 'node:crypto';

import { Sha256 as SdkSha256 } from '@smithy/core/checksum';
import { describe, expect, it } from 'vitest';

import { SigningSha256 } from './s3-signing-hash.js';

type Input = string | Uint8Array | ArrayBuffer;

async function digestHex(hash: { update(data: Input): void; digest(): Promise<Uint8Array> }, chunks: Input[]): Promise<string> {
  for (const chunk of chunks) hash.update(chunk);
  return Buffer.from(await hash.digest()).toString('hex');
}

const secrets: Array<[string, Input]> = [
  ['string key', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'],
  ['byte key', Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8])],
  ['ArrayBuffer key', Uint8Array.from([9, 8, 7]).buffer],
  ['byte view into a larger buffer', new Uint8Array(Uint8Array.from([0, 0, 42, 43, 44, 0]).buffer, 2, 3)],
];

// The SDK's class takes strings and byte arrays, so the comparisons use only these.
const chunks: Input[] = ['AWS4-HMAC-SHA256\n20261205T000000Z\n', Uint8Array.from([0xe2, 0x82, 0xac]), 'tail'];

describe('SigningSha256', () => {
  it('hashes as the SDK class', async () => {
    expect(await digestHex(new SigningSha256(), chunks)).toBe(await digestHex(new SdkSha256(), chunks));
    expect(await digestHex(new SigningSha256(), [])).toBe(createHash('sha256').digest('hex'));
  });

  it('hashes an ArrayBuffer chunk', async () => {
    const bytes = Uint8Array.from([5, 6, 7]);
    expect(await digestHex(new SigningSha256(), [bytes.buffer])).toBe(createHash('sha256').update(bytes).digest('hex'));
  });

  it.each(secrets)('computes HMACs with a %s as the SDK class', async (_name, secret) => {
    expect(await digestHex(new SigningSha256(secret), chunks)).toBe(await digestHex(new SdkSha256(secret), chunks));
  });

  it('keeps cached keys apart', async () => {
    const first = Uint8Array.from([1, 1, 1]);
    const second = Uint8Array.from([2, 2, 2]);

    // Each key twice, so that the second use of each comes from the cache.
    for (const secret of [first, second, first, second, 'alpha', 'beta', 'alpha']) {
      const expected = createHmac('sha256', typeof secret === 'string' ? secret : Buffer.from(secret)).update('data').digest('hex');
      expect(await digestHex(new SigningSha256(secret), ['data'])).toBe(expected);
    }
  });

  it('finds string keys after the cache evicted them', async () => {
    const keys = Array.from({ length: 20 }, (_, index) => `secret-${index}`);
    for (const round of [1, 2]) {
      for (const key of keys) {
        const expected = createHmac('sha256', key).update(`round ${round}`).digest('hex');
        expect(await digestHex(new SigningSha256(key), [`round ${round}`])).toBe(expected);
      }
    }
  });

  it('digests a plain hash more than once', async () => {
    const hash = new SigningSha256();
    hash.update('first');
    const partial = Buffer.from(await hash.digest()).toString('hex');
    hash.update('second');

    expect(partial).toBe(createHash('sha256').update('first').digest('hex'));
    expect(Buffer.from(await hash.digest()).toString('hex')).toBe(createHash('sha256').update('firstsecond').digest('hex'));
  });

  it('rejects an update after an HMAC digest until reset', async () => {
    const hmac = new SigningSha256('key');
    hmac.update('one');
    await hmac.digest();

    expect(() => hmac.update('two')).toThrow(/already digested/);

    hmac.reset();
    hmac.update('two');
    expect(Buffer.from(await hmac.digest()).toString('hex')).toBe(createHmac('sha256', 'key').update('two').digest('hex'));
  });

  it('treats an empty secret as no key, as the SDK class does', async () => {
    expect(await digestHex(new SigningSha256(''), ['x'])).toBe(await digestHex(new SdkSha256(''), ['x']));
  });
});
