import { describe, expect, it } from 'vitest';

import { entryBoundedCache } from './entry-bounded-cache.js';

describe('entryBoundedCache', () => {
  it('keeps at most the given number of entries, forgetting the least recently used', () => {
    const cache = entryBoundedCache<string, number>(3);
    cache.set('a', 1);
    cache.set('b', 2);
    cache.set('c', 3);
    expect(cache.get('a')).toBe(1);

    cache.set('d', 4);

    expect(cache.size).toBe(3);
    expect(cache.has('b')).toBe(false);
    expect([...cache.keys()].sort()).toEqual(['a', 'c', 'd']);
  });

  it('counts every entry once, whatever its value', () => {
    const cache = entryBoundedCache<string, string>(2);
    cache.set('long', 'x'.repeat(10_000));
    cache.set('short', '');
    cache.set('next', 'y');

    expect(cache.size).toBe(2);
    expect(cache.has('long')).toBe(false);
  });
});
