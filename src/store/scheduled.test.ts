import { describe, expect, it } from 'vitest';

import { AbortedError } from './errors.js';
import { MemoryStore } from './memory.js';
import { ScheduledStore } from './scheduled.js';

/** A memory store whose gets and part uploads wait until released, recording the order calls start in. */
class GatedStore extends MemoryStore {
  readonly started: string[] = [];
  private readonly gates: Array<() => void> = [];

  private async gate(label: string): Promise<void> {
    this.started.push(label);
    await new Promise<void>((resolve) => this.gates.push(resolve));
  }

  releaseAll(): void {
    for (const release of this.gates.splice(0)) release();
  }

  override async get(key: string) {
    await this.gate(`get ${key}`);
    return super.get(key);
  }

  override async head(key: string) {
    this.started.push(`head ${key}`);
    return super.head(key);
  }

  override async put(key: string, body: Buffer) {
    await this.gate(`put ${key}`);
    return super.put(key, body);
  }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

describe('ScheduledStore', () => {
  it('keeps upload slots while reads fill the rest', async () => {
    const inner = new GatedStore();
    for (const key of ['a', 'b', 'c', 'd']) inner.putRaw(key, key);
    const store = new ScheduledStore(inner, { concurrency: 4, reservedForUploads: 1 });

    const reads = ['a', 'b', 'c', 'd'].map((key) => store.get(key));
    const upload = store.put('new', Buffer.from('x'));
    await tick();

    // Three read slots and one upload slot: the fourth read waits, the upload runs.
    expect(inner.started).toEqual(['get a', 'get b', 'get c', 'put new']);
    expect(store.waiting).toEqual({ fast: 1, uploads: 0 });

    inner.releaseAll();
    await tick();
    inner.releaseAll();
    await Promise.all([...reads, upload]);
    expect(inner.started).toContain('get d');
  });

  it('runs metadata before waiting reads', async () => {
    const inner = new GatedStore();
    for (const key of ['a', 'b', 'c']) inner.putRaw(key, key);
    const store = new ScheduledStore(inner, { concurrency: 2, reservedForUploads: 1 });

    const first = store.get('a');
    const second = store.get('b');
    const head = store.head('c');
    await tick();
    expect(inner.started).toEqual(['get a']);

    inner.releaseAll();
    await first;
    await head;
    await tick();
    expect(inner.started).toEqual(['get a', 'head c', 'get b']);

    inner.releaseAll();
    await second;
  });

  it('drops a call cancelled while it waits', async () => {
    const inner = new GatedStore();
    inner.putRaw('a', 'a');
    const store = new ScheduledStore(inner, { concurrency: 2, reservedForUploads: 1 });

    const running = store.get('a');
    const controller = new AbortController();
    const waiting = store.get('a', { signal: controller.signal });
    controller.abort();
    inner.releaseAll();

    await running;
    await expect(waiting).rejects.toBeInstanceOf(AbortedError);
    expect(inner.started).toEqual(['get a']);
  });
});
