// basalt serve from the command line with its release files in an S3 bucket: it starts (with no key:
// there is nothing to give it one) and says where the files are, and a wrong bucket or a misplaced
// flag stops it with one line, before it listens.
import { execFile, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type S3Server, startS3 } from "../support/s3.js";

const cli = join(import.meta.dirname, "../../bin/basalt.js");
let s3: S3Server;

beforeAll(async () => {
  s3 = await startS3();
});
afterAll(() => s3?.stop());

const serveArgs = (...extra: string[]) => ["serve", "--data", mkdtempSync(join(tmpdir(), "basalt-servedata-")), "--port", "0", ...extra];
const env = () => ({ ...process.env, ...s3.env, NO_COLOR: "1", BASALT_TOKEN: "t0ken-for-the-operator" });

async function fails(args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await promisify(execFile)(process.execPath, [cli, ...args], { env: env(), timeout: 20_000 });
    return { code: 0, stderr: "" };
  } catch (e) {
    const x = e as { code: number; stderr: string };
    return { code: x.code, stderr: x.stderr };
  }
}

describe("basalt serve --artifacts s3://…", () => {
  it("starts on the bucket and logs where the release files are", async () => {
    const child = spawn(process.execPath, [cli, ...serveArgs("--artifacts", "s3://basalt/cli", "--s3-endpoint", s3.endpoint)], { env: env() });
    try {
      const line = await new Promise<Record<string, unknown>>((resolve, reject) => {
        let out = "";
        child.stdout.on("data", (b: Buffer) => {
          out += b.toString();
          for (const l of out.split("\n")) if (l.includes('"release files"')) resolve(JSON.parse(l));
        });
        child.on("exit", (code) => reject(new Error(`serve exited with ${code}: ${out}`)));
      });
      expect(line.artifacts).toBe("s3://basalt/cli/");
    } finally {
      child.kill("SIGTERM");
    }
  });

  it("stops with one line when the bucket is not there", async () => {
    const r = await fails(serveArgs("--artifacts", "s3://no-such-bucket/x", "--s3-endpoint", s3.endpoint));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: s3:\/\/no-such-bucket\/x\/: no such bucket \(create it first; basalt serve does not\)\n$/);
  });

  it("takes no key: --keys is an option it does not know", async () => {
    const r = await fails(serveArgs("--keys", tmpdir()));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: unknown option '--keys'/);
  });

  it("refuses S3 settings without an S3 store", async () => {
    const r = await fails(serveArgs("--s3-endpoint", s3.endpoint));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: --s3-endpoint, --s3-public-endpoint and --s3-region need --artifacts s3:\/\/BUCKET\/PREFIX\n$/);
  });
});

describe("basalt serve refuses what would leak or collide", () => {
  it("stops with one line, not an internal error, when its port is taken", async () => {
    const { createServer } = await import("node:net");
    const taken = createServer().listen(0, "127.0.0.1");
    await new Promise((r) => taken.once("listening", r));
    try {
      const port = String((taken.address() as { port: number }).port);
      const args = serveArgs().map((a, i, all) => (all[i - 1] === "--port" ? port : a));
      const r = await fails(args);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^error: 127\\.0\\.0\\.1:${port}: the address is in use`));
      expect(r.stderr).not.toMatch(/internal error/);
    } finally {
      taken.close();
    }
  });

  it("will not start with a token file others can read", async () => {
    const { writeFileSync } = await import("node:fs");
    const file = join(mkdtempSync(join(tmpdir(), "basalt-servetoken-")), "token");
    writeFileSync(file, "an-operator-token-that-is-long\n", { mode: 0o644 });
    const r = await fails(serveArgs("--token-file", file));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: .*token: the token file is readable by others \(mode 0644\)\n {2}run 'chmod 600 /);
  });
});
