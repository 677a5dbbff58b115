// An S3-compatible server for the tests: s3rver, in the test process, on a loopback port, over a
// temporary directory. It speaks the S3 REST API the store uses (objects, listing, copies, ranges,
// presigned URLs) but does not check SigV4 signatures, so the tests prove the store's use of the
// protocol, not the signing (that is the minio client's, run against real S3 by its authors).
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import S3rver from "s3rver";

export interface S3Server {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  /** The credentials the store reads from the environment (s3rver's built-in account). */
  env: NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

export async function startS3(buckets: string[] = ["basalt"], address = "127.0.0.1"): Promise<S3Server> {
  const dir = mkdtempSync(join(tmpdir(), "basalt-s3-"));
  const server = new S3rver({ port: 0, address, silent: true, directory: dir, configureBuckets: buckets.map((name) => ({ name, configs: [] })) });
  const { port } = (await server.run()) as { port: number };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    env: { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" },
    async stop() {
      // The client keeps connections alive; without this, close waits for them.
      (server as unknown as { httpServer: Server }).httpServer.closeAllConnections();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
