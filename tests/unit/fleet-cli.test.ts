// basalt fleet from the command line against a real server: the operations change what the server
// serves, --json prints what a script reads, and errors are one line without a stack trace.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OPERATOR_TOKEN, startTestServer, type TestServer } from "../support/fleet-server.js";
import { SimulatedDevice } from "../support/simulated-device.js";

const cli = join(import.meta.dirname, "../../bin/basalt.js");
let s: TestServer;

async function basalt(args: string[], token = OPERATOR_TOKEN): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await promisify(execFile)(process.execPath, [cli, ...args], {
      env: { ...process.env, NO_COLOR: "1", BASALT_SERVER: s.url, BASALT_TOKEN: token },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

beforeAll(async () => {
  s = await startTestServer();
  await s.publish("demo", "stable", "1.0");
  await s.publish("demo", "stable", "2.0", { percent: 0 });
});
afterAll(() => s.close());

describe("basalt fleet", () => {
  it("raises a rollout, pins a device and lists the inventory", async () => {
    const d = new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version: "1.0" });
    expect((await d.poll()).offered).toBeUndefined();

    const pin = await basalt(["fleet", "pin", "demo", "2.0", "--device", d.machine]);
    expect(pin.code, pin.stderr).toBe(0);
    d.reboot();
    expect((await d.poll()).offered).toBe("2.0");

    const raised = await basalt(["fleet", "rollout", "demo", "stable", "2.0", "--percent", "25", "--json"]);
    expect(raised.code, raised.stderr).toBe(0);
    expect(JSON.parse(raised.stdout)).toMatchObject({ version: "2.0", percent: 25, paused: false });

    const status = JSON.parse((await basalt(["fleet", "status", "--json"])).stdout);
    expect(status.rollouts.map((r: { version: string; percent: number }) => [r.version, r.percent])).toEqual([
      ["1.0", 100],
      ["2.0", 25],
    ]);
    // Which key signed each release's indexes (the server signs nothing; it only tells who did).
    const fingerprint = (await s.fleet.db.release("demo", "2.0"))?.signingKey;
    expect(fingerprint).toMatch(/^[0-9A-F]{40}$/);
    expect(status.rollouts.map((r: { signedBy: string }) => r.signedBy)).toEqual([fingerprint, fingerprint]);
    expect((await basalt(["fleet", "status"])).stdout).toMatch(new RegExp(`^ {2}demo stable +2\\.0 +25%.*signed by ${fingerprint?.slice(-16)}`, "m"));

    const list = JSON.parse((await basalt(["fleet", "devices", "--image", "demo", "--json"])).stdout);
    expect(list.total).toBe(1);
    expect(list.devices[0].machine).toBe(d.machine);

    const token = (await basalt(["fleet", "device-token", "demo", d.machine])).stdout.trim();
    expect(token).toBe(s.tokenFor("demo", d.machine));
  });

  it("says what is wrong in one line, without a stack trace", async () => {
    const bad = await basalt(["fleet", "rollout", "demo", "stable", "9.9", "--percent", "10"]);
    // Exit codes say what kind of failure it was: 3 not found, 5 refused (errors.ts exitCode).
    expect(bad.code).toBe(3);
    expect(bad.stderr).toMatch(/^error: POST .*\/api\/v1\/rollouts\/demo\/stable\/9\.9: 404 demo 9\.9 is not offered on stable\n$/);
    const refused = await basalt(["fleet", "status"], "not-the-operator-token");
    expect(refused.code).toBe(5);
    expect(refused.stderr).toMatch(/401/);
    expect(refused.stderr).not.toMatch(/at .*\.ts:\d+/);
    const percent = await basalt(["fleet", "rollout", "demo", "stable", "2.0", "--percent", "150"]);
    expect(percent.stderr).toMatch(/--percent: expected a percentage from 0 to 100/);
  });
});
