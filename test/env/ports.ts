/**
 * Free loopback ports for the servers that tests start.
 */

import { createServer } from 'node:net';

/**
 * Returns a TCP port that was free on 127.0.0.1 a moment ago.
 *
 * The kernel picks the port (bind to port 0) and the socket is closed before
 * the caller uses the number, so another process could take it in between.
 * Callers that start a server on it should treat "address in use" as a reason
 * to ask for another port.
 */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.unref();

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => resolve());
  });

  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));

  if (address === null || typeof address === 'string') {
    throw new Error(`binding 127.0.0.1:0 returned no TCP port (address: ${String(address)})`);
  }
  return address.port;
}
