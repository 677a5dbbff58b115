// The four places where the README's worked example broke for a new user, each through the
// command line as the README calls it (the whole example runs in the VM suite: tests/e2e/scenarios/readme).
import { execFile, execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureKeys } from "../../src/build/build.js";
import { loadAppliance } from "../../src/definition/load.js";
import { createKeySet, keySetInfo } from "../../src/keys/keys.js";
import { createReporter } from "../../src/report/reporter.js";
import { resolveVmTarget } from "../../src/vm/target.js";
import { fixture, TEST_KEY } from "../support/fixtures.js";
import { OPERATOR_TOKEN, standInRelease, startTestServer, type TestServer } from "../support/fleet-server.js";

const root = join(import.meta.dirname, "../..");
const cli = join(root, "bin/basalt.js");

async function basalt(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const base: Record<string, string | undefined> = { ...process.env, NO_COLOR: "1" };
  delete base.BASALT_SERVER;
  delete base.BASALT_TOKEN;
  try {
    const r = await promisify(execFile)(process.execPath, [cli, ...args], { env: { ...base, ...env }, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

/** examples/minimal as a fresh clone has it: no keys, nothing built. */
function minimalCopy(): string {
  const dir = join(fixture({}), "minimal");
  cpSync(join(root, "examples/minimal"), dir, { recursive: true, filter: (src) => !/\/(out|keys)$/.test(src) });
  return dir;
}

describe("1. keys init after the Quick start's build", () => {
  it("replaces the development key set the build made, without --force, and says so", async () => {
    const dir = minimalCopy();
    // What the Quick start's `./basalt build examples/minimal` leaves: a development key set.
    await ensureKeys(dir, createReporter({ quiet: true }));
    expect(keySetInfo(join(dir, "keys"))?.dev).toBe(true);

    const r = await basalt(["keys", "init", dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^replaced the development key set in .*\/keys \(development keys are replaced without --force\)\n/);
    expect(keySetInfo(join(dir, "keys"))?.dev).toBe(false);
  });

  it("still refuses to replace a real key set unless forced", async () => {
    const dir = minimalCopy();
    await createKeySet(join(dir, "keys"), { dev: false, commonName: "minimal" });
    const r = await basalt(["keys", "init", dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: .*\/keys already holds a key set\n {2}pass --force to replace it/);
    expect((await basalt(["keys", "init", dir, "--force"])).code).toBe(0);
  });
});

describe("2. publish after `export BASALT_SERVER=… BASALT_TOKEN=…`", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer();
  });
  afterAll(() => s?.close());

  it("takes the server from BASALT_SERVER, as every basalt fleet command does", async () => {
    // An appliance with a release on disk, as `basalt release` leaves it (stand-in files).
    const dir = fixture({ "appliance.toml": 'id = "demo"\nversion = "3.0"\n', authorized_keys: `${TEST_KEY}\n` });
    const release = await standInRelease("demo", "3.0");
    const out = join(dir, "out/releases/3.0");
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, "release.json"), JSON.stringify(release.manifest));
    for (const [name, bytes] of Object.entries(release.files)) writeFileSync(join(out, name), bytes);

    const env = { BASALT_SERVER: s.url, BASALT_TOKEN: OPERATOR_TOKEN };
    const r = await basalt(["publish", dir], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^published demo: stable now offers 3\.0\n$/);
    const status = await basalt(["fleet", "status", "--json"], env);
    expect(JSON.parse(status.stdout).rollouts).toEqual([expect.objectContaining({ image: "demo", version: "3.0", percent: 100 })]);
  });

  it("says in one line how to name a server when there is none", async () => {
    for (const args of [
      ["publish", "."],
      ["fleet", "status"],
    ]) {
      const r = await basalt(args, { BASALT_TOKEN: OPERATOR_TOKEN });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe("error: no server given\n  pass --server URL or set BASALT_SERVER\n");
    }
  });
});

describe("3. vm ssh with a remote command that has options", () => {
  // No VM runs here: what matters is that the command line reaches the command (which then says
  // what it is missing) instead of stopping at an option meant for the guest.
  it("passes options after the target on to the remote command", async () => {
    const r = await basalt(["vm", "ssh", "/nonexistent/appliance", "sudo", "systemctl", "start", "--wait", "systemd-sysupdate"]);
    expect(r.stderr).not.toMatch(/unknown option/);
    expect(r.stderr).toMatch(/^error: \/nonexistent\/appliance: not an appliance directory, a VM directory or a \.raw disk image\n/);
  });

  it("takes `--` before the remote command too", async () => {
    const r = await basalt(["vm", "ssh", "/nonexistent/appliance", "--", "ls", "-l", "--name", "x"]);
    expect(r.stderr).toMatch(/^error: \/nonexistent\/appliance: not an appliance directory/);
  });
});

describe("4. logging in to the example appliance", () => {
  /** The public key blobs of the private keys in `dir`, as OpenSSH derives them. */
  const privateKeyBlobs = (dir: string) =>
    readdirSync(dir)
      .filter((f) => readFileSync(join(dir, f), "utf8").includes("OPENSSH PRIVATE KEY"))
      .map((f) => execFileSync("ssh-keygen", ["-y", "-f", join(dir, f)], { encoding: "utf8" }).split(" ")[1]);

  it("authorizes a key whose private half the key set holds, and vm ssh logs in with it", async () => {
    const dir = minimalCopy();
    const r = await basalt(["keys", "init", dir]);
    expect(r.code, r.stderr).toBe(0);
    const { appliance } = loadAppliance(dir);
    const authorized = readFileSync(join(dir, appliance.user.authorized_keys), "utf8");
    const blobs = privateKeyBlobs(join(dir, "keys"));
    expect(blobs.length).toBe(1);
    expect(authorized).toContain(blobs[0]);
    // Where `basalt vm start`/`vm ssh` take the login key from.
    expect(resolveVmTarget(dir, "default").identity).toBe(join(dir, "keys/login_ed25519"));
  });

  it("before any keys exist: the definition names `basalt keys init`; a build makes the keys first", async () => {
    const dir = minimalCopy();
    const plan = await basalt(["plan", dir]);
    expect(plan.code).toBe(2);
    expect(plan.stderr).toMatch(
      /\n {2}\S*appliance\.toml:\d+ user\.authorized_keys: file not found: .*\/keys\/login_ed25519\.pub; the appliance's key set brings it: run 'basalt keys init \S+' \(or 'basalt build', which makes development keys\)\n/,
    );
    // `basalt build` runs its keys phase before it checks the definition.
    await ensureKeys(dir, createReporter({ quiet: true }));
    expect(existsSync(join(dir, "keys/login_ed25519"))).toBe(true);
    expect(loadAppliance(dir).appliance.user.authorized_keys).toBe("keys/login_ed25519.pub");
  });

  it("keeps a user's own key working (what basalt init writes): vm ssh then lets ssh offer the user's keys", async () => {
    const dir = fixture({ "appliance.toml": 'id = "demo"\nversion = "1.0"\n', authorized_keys: `${TEST_KEY}\n` });
    await ensureKeys(dir, createReporter({ quiet: true }));
    expect(existsSync(join(dir, "keys/login_ed25519"))).toBe(true);
    expect(resolveVmTarget(dir, "default").identity).toBeUndefined();
  });
});
