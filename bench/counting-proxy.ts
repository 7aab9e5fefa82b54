/**
 * A TCP proxy on 127.0.0.1 that forwards to an object server and counts the
 * bytes the server sends back. Every client in the benchmark (the SDK
 * ceiling and every mount) reaches the object server through one of these,
 * so that "bytes fetched from the server" is measured the same way for all
 * of them: HTTP headers and listing responses included.
 */

import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface CountingProxy {
  /** `http://127.0.0.1:PORT` */
  endpoint: string;
  /** Bytes sent from the server to clients since the proxy started. */
  bytesFromServer(): number;
  stop(): Promise<void>;
}

export async function startCountingProxy(upstream: string): Promise<CountingProxy> {
  const target = new URL(upstream);
  const upstreamPort = Number(target.port);
  let bytesFromServer = 0;
  const sockets = new Set<Socket>();

  const server: Server = createServer((client) => {
    const backend = createConnection({ host: target.hostname, port: upstreamPort });
    sockets.add(client);
    sockets.add(backend);
    client.setNoDelay(true);
    backend.setNoDelay(true);

    backend.on('data', (chunk: Buffer) => {
      bytesFromServer += chunk.length;
    });
    client.pipe(backend);
    backend.pipe(client);

    // A reset on one side closes the other; these are normal ends of
    // keep-alive connections when a mount stops.
    const close = (): void => {
      client.destroy();
      backend.destroy();
      sockets.delete(client);
      sockets.delete(backend);
    };
    client.on('error', close);
    backend.on('error', close);
    client.on('close', close);
    backend.on('close', close);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the counting proxy did not get a TCP port');

  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    bytesFromServer: () => bytesFromServer,
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
