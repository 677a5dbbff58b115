// A scenario is a sequence of named steps against VMs. A failure names the step that was pending
// and shows the console tail; each step's time is recorded and printed, and the VMs are stopped
// (and their directories removed unless BASALT_E2E_KEEP=1) at the end.
import { appendFileSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "../../../src/process/run.js";
import { createReporter } from "../../../src/report/reporter.js";
import { type CreateOptions, Vm } from "../../../src/vm/machine.js";
import type { ExecResult, SshSession } from "../../../src/vm/ssh.js";
import { ensureVmTools, type VmTools } from "../../../src/vm/tools.js";
import { type BuiltImage, whileAlone, workDir } from "./image.js";
import { poll } from "./poll.js";

/** Under TCG a boot to SSH takes about a minute; this leaves room for a loaded CI machine. */
export const BOOT_TIMEOUT_MS = 300_000;

let tools: VmTools | undefined;
export async function vmTools(): Promise<VmTools> {
  tools ??= await ensureVmTools(createReporter({ live: false, quiet: true }));
  return tools;
}

export class StepError extends Error {}

export class Scenario {
  readonly steps: { name: string; seconds: number }[] = [];
  private readonly vms: Vm[] = [];
  private readonly cleanups: (() => Promise<void>)[] = [];
  private readonly started = performance.now();
  /** The step that failed, if one did. */
  private failed: string | undefined;

  constructor(readonly name: string) {}

  async step<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      const value = await fn();
      this.steps.push({ name, seconds: (performance.now() - start) / 1000 });
      return value;
    } catch (e) {
      this.failed = name;
      const consoles = this.vms.map((vm) => `--- console of ${vm.dir} (last lines) ---\n${vm.consoleTail(30)}`).join("\n");
      throw new StepError(`[${this.name}] step "${name}" failed: ${(e as Error).message}\n${consoles}`);
    }
  }

  /** A fresh VM on its own overlay of `image`, not started yet. */
  async create(label: string, image: BuiltImage, options: Omit<CreateOptions, "user" | "identity"> = {}): Promise<Vm> {
    const dir = join(workDir(), "vms", `${this.name}-${label}`);
    rmSync(dir, { recursive: true, force: true });
    const vm = await Vm.create(dir, image.image, await vmTools(), { user: image.user, identity: image.identity, ...options });
    this.vms.push(vm);
    return vm;
  }

  /**
   * A VM that continues `image`'s first boot, saved once per run (the first scenario to ask pays
   * for the boot, as a step of its own): it is up, blessed and logged in within seconds. Every such
   * VM is the same machine (machine-id, boot id, /var's key); its clock is set to the host's.
   */
  async restore(label: string, image: BuiltImage, options: { ports?: number[] } = {}): Promise<{ vm: Vm; ssh: SshSession }> {
    const snapshot = await this.bootedSnapshot(image);
    const vm = await Vm.restore(snapshot, join(workDir(), "vms", `${this.name}-${label}`), await vmTools(), options);
    this.vms.push(vm);
    const ssh = await this.step(`restore VM ${label} (${image.name}, booted and blessed)`, async () => {
      await vm.start();
      const session = await vm.waitForSsh(120_000);
      // The saved clock stood still; signatures and TLS need the real time.
      await sh(session, `sudo -n date -s @${Math.floor(Date.now() / 1000)} > /dev/null`);
      return session;
    });
    return { vm, ssh };
  }

  private bootedSnapshot(image: BuiltImage): Promise<string> {
    const dir = join(workDir(), "snapshots", image.name);
    return whileAlone(dir, async () => {
      const stamp = join(dir, "stamp.json");
      const want = JSON.stringify({
        image: image.image,
        built: statSync(image.image).mtimeMs,
        ...(process.env.BASALT_E2E_REUSE === "1" ? {} : { run: image.run }),
      });
      if (existsSync(stamp) && readFileSync(stamp, "utf8") === want) return dir;
      rmSync(dir, { recursive: true, force: true });
      const vm = await this.create(`first-boot-of-${image.name}`, image);
      await this.step(`first boot of ${image.name}, saved for every scenario that continues it`, async () => {
        await vm.start();
        const ssh = await vm.waitForSsh(BOOT_TIMEOUT_MS);
        await waitBlessed(ssh, "good");
        ssh.close();
        await vm.saveState(dir);
      });
      writeFileSync(stamp, want);
      return dir;
    });
  }

  /** A fresh VM on its own overlay of `image`, started. */
  async boot(label: string, image: BuiltImage, options: Omit<CreateOptions, "user" | "identity"> = {}): Promise<Vm> {
    const vm = await this.create(label, image, options);
    await this.step(`start VM ${label}`, () => vm.start());
    return vm;
  }

  /** A VM started outside the harness (by `basalt vm start`): its console goes with a failure, and it is stopped at the end. */
  track(vm: Vm): void {
    if (!this.vms.some((v) => v.dir === vm.dir)) this.vms.push(vm);
  }

  /** Something to undo when the scenario ends, however it ends (a server to close). */
  defer(cleanup: () => Promise<void>): void {
    this.cleanups.push(cleanup);
  }

  async finish(): Promise<void> {
    for (const c of this.cleanups.splice(0).reverse()) await c().catch(() => undefined);
    for (const vm of this.vms) {
      vm.kill();
      if (process.env.BASALT_E2E_KEEP !== "1") rmSync(vm.dir, { recursive: true, force: true });
    }
    const total = (performance.now() - this.started) / 1000;
    const lines = [
      `scenario ${this.name}: ${this.failed ? "FAILED" : "passed"} in ${total.toFixed(0)} s`,
      ...this.steps.map((s) => `  ${s.seconds.toFixed(1).padStart(6)} s  ${s.name}`),
    ];
    console.log(lines.join("\n"));
    appendFileSync(
      join(workDir(), "timings.jsonl"),
      `${JSON.stringify({ scenario: this.name, failed: Boolean(this.failed), failedStep: this.failed ?? null, seconds: total, steps: this.steps, at: new Date().toISOString() })}\n`,
    );
  }
}

/** Runs a command in the guest and returns its stdout; a non-zero exit is an error with its output. */
export async function sh(ssh: SshSession, command: string, timeoutMs?: number): Promise<string> {
  const r = await ssh.exec(command, timeoutMs);
  if (r.code !== 0) throw new Error(`\`${command}\` exited ${r.code}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout.trim();
}

/** Runs a command that must fail; returns what it printed. */
export async function shFails(ssh: SshSession, command: string): Promise<ExecResult> {
  const r = await ssh.exec(command);
  if (r.code === 0) throw new Error(`\`${command}\` succeeded but must fail`);
  return r;
}

/** Reboots the guest from inside and returns a session to the next boot (a new boot id). */
export async function reboot(vm: Vm, ssh: SshSession, how = "sudo systemctl reboot"): Promise<SshSession> {
  const before = await sh(ssh, "cat /proc/sys/kernel/random/boot_id");
  await ssh.exec(`${how} &`).catch(() => undefined);
  ssh.close();
  // The old sshd may still answer for a moment: a session counts once the boot id changed.
  return poll(
    "the guest to come back with a new boot id",
    async () => {
      const next = await vm.waitForSsh(30_000);
      const id = await sh(next, "cat /proc/sys/kernel/random/boot_id").catch(() => before);
      if (id !== before) return next;
      next.close();
      return undefined;
    },
    { timeoutMs: BOOT_TIMEOUT_MS, intervalMs: 5000 },
  );
}

/**
 * Waits until systemd-bless-boot says `expected`: "good" for a boot the loader counted (a new
 * version's first boots), "clean" for one it did not (a version blessed before).
 */
export async function waitBlessed(ssh: SshSession, expected: "good" | "clean", timeoutMs = 300_000): Promise<void> {
  await poll(
    `systemd-bless-boot to say "${expected}" (boot-complete.target reached)`,
    async () => {
      const status = (await ssh.exec("sudo -n /usr/lib/systemd/systemd-bless-boot status")).stdout.trim();
      if (status === expected && (await ssh.exec("systemctl is-active --quiet boot-complete.target")).code === 0) return true;
      if (status === "bad" || (status !== expected && status !== "indeterminate")) throw new Error(`the boot is "${status}"`);
      return undefined;
    },
    { timeoutMs, intervalMs: 3000 },
  );
}

/** Runs a program from the tools tree (qemu-io, dump.erofs) and returns its stdout. */
export async function tool(argv: string[]): Promise<string> {
  const t = await vmTools();
  return (await run([...t.prefix, ...argv], { env: t.env, capture: true })).stdout;
}
