// The README, run as written: the Quick start's build, then the worked example "Updates and
// fleets" (keys, two builds and releases, a server, publishing, a VM on 1.0 updated to 2.0 and
// rebooted). The commands are read from README.md when the test runs and each is a step named by
// its README line, run in one shell (variables, exports and background jobs carry over) whose
// working directory holds a copy of examples/ and `basalt`, a link to this repository's
// bin/basalt.js (the README says ./basalt). The environment differs from a user's only where it
// must, each difference declared and checked below. Then what the example promises is checked:
// the VM runs 2.0, healthy in `basalt fleet devices`, with 1.0 kept as its fallback.
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { freePort, Vm } from "../../../../src/vm/machine.js";
import type { SshSession } from "../../../../src/vm/ssh.js";
import { quickStart, type ReadmeCommand, ROOT, ShellSession, shellBlocks, splitCommands, withoutComment } from "../../../support/readme.js";
import { workDir } from "../../harness/image.js";
import { poll } from "../../harness/poll.js";
import { BOOT_TIMEOUT_MS, Scenario, vmTools, waitBlessed } from "../../harness/scenario.js";
import { imageVersion, ukis } from "../../harness/updates.js";

const s = new Scenario("readme");
afterAll(() => s.finish());

/** A build may provision mkosi and its tools tree first (minutes on a cold cache). */
const BUILD_TIMEOUT_MS = 40 * 60_000;
const COMMAND_TIMEOUT_MS = 10 * 60_000;

/**
 * Where the test's environment must differ from a user's, as text replaced in the worked example
 * before it runs; each must occur exactly `count` times, so a README change meets this list.
 */
function substitutions(port: number, data: string) {
  return [
    // Port 8080 may be taken on a shared test machine: the server, the device's update URL, the
    // operator's BASALT_SERVER and the dashboard URL in a comment move to a free port together.
    { from: ":8080", to: `:${port}`, count: 3, why: "a free port instead of 8080 (update url, BASALT_SERVER, dashboard)" },
    { from: "--port 8080", to: `--port ${port}`, count: 1, why: "a free port instead of 8080 (basalt serve)" },
    // /srv belongs to the machine, not to a test.
    { from: "--data /srv/basalt", to: `--data ${data}`, count: 1, why: "the server's data in the test's directory, not /srv" },
  ];
}

const isBackground = (c: ReadmeCommand) => withoutComment(c.text.split("\n").at(-1) ?? "").endsWith("&");

/** Until something accepts connections on loopback `port` (the server the README started with &). */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.on("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

it("runs the Quick start's build and the worked example as written; the VM ends on 2.0, healthy, with 1.0 as fallback", async () => {
  const dir = join(workDir(), "readme");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  cpSync(join(ROOT, "examples"), join(dir, "examples"), { recursive: true, filter: (src) => !/\/(out|keys)$/.test(src) });
  symlinkSync(join(ROOT, "bin/basalt.js"), join(dir, "basalt"));
  const vmDir = join(dir, "examples/minimal/out/vms/default");
  // Whatever happens, nothing the README started keeps running: the VM (vm start --detach) …
  s.defer(async () => {
    if (existsSync(join(vmDir, "vm.json"))) Vm.open(vmDir, await vmTools()).kill();
  });
  const env: Record<string, string | undefined> = { ...process.env, NO_COLOR: "1", CI: "1" };
  delete env.BASALT_SERVER;
  delete env.BASALT_TOKEN;
  const shell = new ShellSession(dir, env);
  s.defer(async () => shell.close());
  const run = async (c: ReadmeCommand, timeoutMs: number) => {
    const r = await shell.run(c.text, timeoutMs);
    if (r.code !== 0) throw new Error(`exited ${r.code}:\n${r.output.slice(-4000)}`);
    return r;
  };

  // The Quick start: its build runs; `npm test` cannot run inside npm test (tests/unit/readme.test.ts
  // checks that it is scripts/test.sh, which CI runs).
  const quick = quickStart();
  expect(quick.map((c) => withoutComment(c.text))).toEqual(["./basalt build examples/minimal", "npm test"]);
  for (const c of quick.filter((q) => withoutComment(q.text) !== "npm test")) {
    const r = await s.step(c.name, () => run(c, BUILD_TIMEOUT_MS));
    expect(r.output).toMatch(/built minimal 1\.0 in \d+ s \(dev-signed\)\n {2}image: {4}\S+\/examples\/minimal\/out\/1\.0\/minimal_1\.0\.raw\n/);
  }

  // The worked example, with the declared substitutions.
  const blocks = shellBlocks();
  expect(blocks).toHaveLength(1);
  const original = blocks[0] as ReadmeCommand[];
  const port = await freePort();
  const subs = substitutions(port, join(dir, "srv-basalt"));
  const whole = original.map((c) => c.text).join("\n");
  for (const sub of subs) expect(whole.split(sub.from).length - 1, `README worked example: "${sub.from}" (${sub.why})`).toBe(sub.count);
  const commands = original.map((c) => {
    const text = subs.reduce((t, sub) => t.split(sub.from).join(sub.to), c.text);
    return splitCommands(text, c.line)[0] as ReadmeCommand;
  });
  expect(commands.map((c) => c.line)).toEqual(original.map((c) => c.line));

  for (const [i, c] of commands.entries()) {
    const name = (original[i] as ReadmeCommand).name;
    const words = withoutComment(c.text);
    const timeout = /\.\/basalt build/.test(words) ? BUILD_TIMEOUT_MS : COMMAND_TIMEOUT_MS;
    const r = await s.step(name, () => run(c, timeout));
    if (isBackground(c)) {
      // … and the server (the one command the README leaves in the background).
      const pid = r.lastJob;
      expect(pid, `${name}: no background job`).toBeGreaterThan(0);
      s.defer(async () => {
        try {
          process.kill(pid as number, "SIGTERM");
        } catch {}
      });
      // A user types the next lines while it starts; the test waits for it to listen.
      await s.step(`(the server of README.md:${c.line} listens on ${port})`, () =>
        poll("basalt serve to listen", async () => ((await listening(port)) ? true : undefined), { timeoutMs: 60_000, intervalMs: 500 }),
      );
    }
    if (/\.\/basalt keys init/.test(words)) expect(r.output).toMatch(/^replaced the development key set in \S+\/examples\/minimal\/keys/m);
    if (/\.\/basalt build examples\/minimal\s*$/.test(words)) expect(r.output).toMatch(/built minimal 1\.0 in \d+ s\n/);
    if (/^\.\/basalt publish examples\/minimal\s*$/.test(words)) expect(r.output).toMatch(/published minimal: stable now offers 1\.0\n/);
    if (/\.\/basalt vm start/.test(words)) s.track(Vm.open(vmDir, await vmTools()));
  }

  // What the example promises.
  const uuid = (await shell.run('printf %s "$uuid"', 10_000)).output.trim();
  const machine = uuid.replaceAll("-", "");
  expect(machine).toMatch(/^[0-9a-f]{32}$/);
  const vm = Vm.open(vmDir, await vmTools());
  const ssh = await s.step("the VM comes back from its reboot running 2.0", () =>
    poll(
      "the VM to run 2.0",
      async () => {
        const session = await vm.waitForSsh(60_000);
        if ((await imageVersion(session).catch(() => "")) === "2.0") return session;
        session.close();
        return undefined;
      },
      { timeoutMs: BOOT_TIMEOUT_MS, intervalMs: 5000 },
    ),
  );
  await s.step("2.0 is blessed, and 1.0 stays installed as the fallback", async () => {
    await waitBlessed(ssh as SshSession, "good");
    const files = await ukis(ssh);
    expect(files).toContain("minimal_2.0.efi");
    expect(files.some((f) => /^minimal_1\.0(\+\d+(-\d+)?)?\.efi$/.test(f))).toBe(true);
  });
  ssh.close();
  await s.step("`./basalt fleet devices --json` lists the VM, healthy, on 2.0", () =>
    poll(
      "the inventory to show the VM healthy on 2.0",
      async () => {
        // Into a file: the shell's output also carries what the server started in it logs.
        const r = await shell.run("./basalt fleet devices --json > fleet-devices.json", 60_000);
        if (r.code !== 0) throw new Error(r.output);
        const list = JSON.parse(readFileSync(join(dir, "fleet-devices.json"), "utf8")) as {
          devices: { machine: string; image: string; bootedVersion: string | null; healthy: boolean | null }[];
        };
        const d = list.devices.find((x) => x.machine === machine);
        return d?.bootedVersion === "2.0" && d.healthy === true ? d : undefined;
      },
      { timeoutMs: 300_000, intervalMs: 5000 },
    ),
  );
});
