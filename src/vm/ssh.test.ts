// The SSH client the VM harness waits with: a guest that goes away mid-handshake must fail the
// attempt (so the caller tries again), never leave it waiting.
import { generateKeyPairSync } from "node:crypto";
import { createServer, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { SshSession } from "./ssh.js";

const key = generateKeyPairSync("rsa", {
  modulusLength: 2048,
  privateKeyEncoding: { type: "pkcs1", format: "pem" },
  publicKeyEncoding: { type: "spki", format: "pem" },
}).privateKey;
const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A TCP server that answers like sshd, then does `then` with the connection. */
async function fakeSshd(then: "close" | "silence"): Promise<number> {
  const server = createServer((sock) => {
    sock.write("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
    if (then === "close") setTimeout(() => sock.destroy(), 50);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return (server.address() as { port: number }).port;
}

describe("SshSession.connect", () => {
  it("fails when the server closes the connection after its banner", async () => {
    const port = await fakeSshd("close");
    await expect(SshSession.connect({ port, user: "x" }, key, 30_000)).rejects.toThrow(/closed during the SSH handshake|Connection lost/);
  });

  it("fails when the server falls silent after its banner", async () => {
    const port = await fakeSshd("silence");
    await expect(SshSession.connect({ port, user: "x" }, key, 1000)).rejects.toThrow(/Timed out while waiting for handshake/);
  });
});
