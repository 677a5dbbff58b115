// One VM per directory: a copy-on-write overlay of the built image (which stays pristine), its own
// UEFI variables, a persistent swtpm state and a stable SMBIOS UUID, so the machine-id, the TPM-bound
// /var and the boot counters survive restarts exactly as on a device.
import { randomUUID } from "node:crypto";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { UserError } from "../errors.js";
import { type Daemon, isAlive, killGroup, run, spawnDaemon } from "../process/run.js";
import { type Accel, detectAccel } from "./accel.js";
import { Qmp } from "./qmp.js";
import { SshSession as Ssh, type SshSession } from "./ssh.js";
import { firmwareArgv, type VmTools } from "./tools.js";

export interface VmConfig {
  image: string;
  /** SMBIOS system UUID: the guest's machine-id with `systemd.machine_id=firmware`. */
  uuid: string;
  user: string;
  /** Private key that logs in as `user`, when known. */
  identity?: string;
  memoryMiB: number;
  cpus: number;
  /** Size of the virtual disk; repart grows the second slot and /var into it on first boot. */
  diskSize: string;
  /** Guest TCP ports forwarded to loopback: guest port → host port. */
  forwards: Record<string, number>;
  /** systemd credentials passed in through SMBIOS type 11, as a device's firmware or BMC would (name → value). */
  credentials?: Record<string, string>;
  /** Secure Boot firmware, starting in setup mode (no keys) or with vendor (Microsoft) keys; absent: no Secure Boot. */
  secureBoot?: SecureBootStart;
}

export type SecureBootStart = "setup" | "vendor";

export interface VmRuntime {
  qemuPid: number;
  swtpmPid: number;
  accel: Accel;
  startedAt: string;
}

export interface CreateOptions {
  user: string;
  identity?: string;
  memoryMiB?: number;
  cpus?: number;
  diskSize?: string;
  uuid?: string;
  /** Extra guest ports to forward besides SSH. */
  ports?: number[];
  credentials?: Record<string, string>;
  secureBoot?: SecureBootStart;
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? resolvePort(addr.port) : reject(new Error("no port"))));
    });
  });
}

/** Credential names as systemd accepts them; values on one line (SMBIOS strings cannot hold a newline). */
function checkCredentials(creds: Record<string, string>): Record<string, string> {
  for (const [name, value] of Object.entries(creds)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/.test(name)) throw new UserError(`invalid credential name: ${JSON.stringify(name)}`);
    if (/[\r\n\0]/.test(value)) throw new UserError(`credential ${name}: the value must be one line`);
  }
  return creds;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Console text without terminal escapes (colours, cursor moves), for matching and for reports. */
function plainText(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: terminal escapes are control characters
  return text.replace(/\x1b\[[0-9;?=]*[A-Za-z]/g, "");
}

export class Vm {
  private daemons: Daemon[] = [];

  private constructor(
    readonly dir: string,
    readonly config: VmConfig,
    private readonly tools: VmTools,
  ) {}

  get sshPort(): number {
    return this.config.forwards["22"] ?? 0;
  }
  get serialLog(): string {
    return join(this.dir, "serial.log");
  }
  private get runtimeFile(): string {
    return join(this.dir, "run.json");
  }

  /** Makes a VM directory for an image; an existing one is reused unchanged. */
  static async create(dir: string, image: string, tools: VmTools, options: CreateOptions): Promise<Vm> {
    const root = resolve(dir);
    if (existsSync(join(root, "vm.json"))) return Vm.open(root, tools);
    const abs = resolve(image);
    if (!existsSync(abs)) throw new UserError(`${image}: no such image`);
    mkdirSync(join(root, "tpm"), { recursive: true });
    const forwards: Record<string, number> = { "22": await freePort() };
    for (const p of options.ports ?? []) forwards[String(p)] = await freePort();
    const config: VmConfig = {
      image: abs,
      uuid: options.uuid ?? randomUUID(),
      user: options.user,
      ...(options.identity ? { identity: resolve(options.identity) } : {}),
      memoryMiB: options.memoryMiB ?? 2048,
      cpus: options.cpus ?? 2,
      diskSize: options.diskSize ?? "8G",
      forwards,
      ...(options.credentials ? { credentials: checkCredentials(options.credentials) } : {}),
      ...(options.secureBoot ? { secureBoot: options.secureBoot } : {}),
    };
    const q = (argv: string[]) => run([...tools.prefix, ...argv], { env: tools.env, capture: true });
    await q(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", abs, join(root, "disk.qcow2"), config.diskSize]);
    copyFileSync(config.secureBoot === "vendor" ? tools.vendorVars : tools.firmwareVars, join(root, "efivars.fd"));
    await q(["swtpm_setup", "--tpm-state", join(root, "tpm"), "--tpm2", "--pcr-banks", "sha256", "--config", "/dev/null"]);
    // Credentials may be secrets (a report token): the file is the operator's alone.
    writeFileSync(join(root, "vm.json"), `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
    return new Vm(root, config, tools);
  }

  /**
   * A new VM in `dir` that continues a saved one (saveState): its disk is an overlay of the saved
   * disk, its UEFI variables a copy, and its first start resumes the saved machine (memory, devices,
   * TPM) instead of booting. Every clone is the same machine (machine-id, boot id, keys); only the
   * host ports differ.
   */
  static async restore(snapshot: string, dir: string, tools: VmTools, options: { ports?: number[] } = {}): Promise<Vm> {
    const saved = JSON.parse(readFileSync(join(snapshot, "vm.json"), "utf8")) as VmConfig;
    const root = resolve(dir);
    rmSync(root, { recursive: true, force: true });
    mkdirSync(join(root, "tpm"), { recursive: true });
    const forwards: Record<string, number> = {};
    for (const guest of new Set([...Object.keys(saved.forwards), ...(options.ports ?? []).map(String)])) forwards[guest] = await freePort();
    const config: VmConfig = { ...saved, forwards };
    const q = (argv: string[]) => run([...tools.prefix, ...argv], { env: tools.env, capture: true });
    await q(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", join(snapshot, "disk.qcow2"), join(root, "disk.qcow2")]);
    copyFileSync(join(snapshot, "efivars.fd"), join(root, "efivars.fd"));
    // The TPM's state comes with the machine state; swtpm starts from an empty one it overwrites.
    await q(["swtpm_setup", "--tpm-state", join(root, "tpm"), "--tpm2", "--pcr-banks", "sha256", "--config", "/dev/null"]);
    writeFileSync(join(root, "vm.json"), `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
    writeFileSync(join(root, "incoming"), join(snapshot, "state"));
    return new Vm(root, config, tools);
  }

  static open(dir: string, tools: VmTools): Vm {
    const root = resolve(dir);
    const file = join(root, "vm.json");
    if (!existsSync(file)) throw new UserError(`${dir}: not a VM directory (no vm.json)`);
    return new Vm(root, JSON.parse(readFileSync(file, "utf8")) as VmConfig, tools);
  }

  runtime(): VmRuntime | undefined {
    if (!existsSync(this.runtimeFile)) return undefined;
    const rt = JSON.parse(readFileSync(this.runtimeFile, "utf8")) as VmRuntime;
    return isAlive(rt.qemuPid) ? rt : undefined;
  }

  running(): boolean {
    return this.runtime() !== undefined;
  }

  /** Byte offset in the serial log; waits can start from a mark to see only what came after. */
  serialMark(): number {
    return existsSync(this.serialLog) ? statSync(this.serialLog).size : 0;
  }

  serialSince(mark: number): string {
    if (!existsSync(this.serialLog)) return "";
    const size = statSync(this.serialLog).size;
    if (size <= mark) return "";
    const fd = openSync(this.serialLog, "r");
    try {
      const buf = Buffer.alloc(size - mark);
      readSync(fd, buf, 0, buf.length, mark);
      return buf.toString("utf8");
    } finally {
      closeSync(fd);
    }
  }

  /** The last lines of the console, without colour escapes: what a failure report shows. */
  consoleTail(lines = 40): string {
    const text = this.serialSince(Math.max(0, this.serialMark() - 64 * 1024));
    const plain = plainText(text).replace(/\r/g, "");
    return plain.split("\n").slice(-lines).join("\n");
  }

  async start(options: { detach?: boolean } = {}): Promise<VmRuntime> {
    if (this.running()) throw new UserError(`VM ${this.dir} is already running`);
    // A restored VM resumes its saved state once; later starts boot.
    const incomingFile = join(this.dir, "incoming");
    const incoming = existsSync(incomingFile) ? readFileSync(incomingFile, "utf8") : undefined;
    rmSync(incomingFile, { force: true });
    const accel = await detectAccel(this.tools, { smm: Boolean(this.config.secureBoot) });
    const sock = join(this.dir, "swtpm.sock");
    rmSync(sock, { force: true });
    const swtpm = spawnDaemon(
      [...this.tools.prefix, "swtpm", "socket", "--tpm2", "--tpmstate", `dir=${join(this.dir, "tpm")}`, "--ctrl", `type=unixio,path=${sock}`, "--terminate"],
      { logFile: join(this.dir, "swtpm.log"), env: this.tools.env, ...(options.detach ? { detach: true } : {}) },
    );
    this.daemons.push(swtpm);
    for (let i = 0; i < 100 && !existsSync(sock); i++) await sleep(100);
    if (!existsSync(sock)) {
      swtpm.kill("SIGKILL");
      throw new UserError("swtpm did not start", `see ${join(this.dir, "swtpm.log")}`);
    }
    const qmpSock = join(this.dir, "qmp.sock");
    rmSync(qmpSock, { force: true });
    const qemu = spawnDaemon([...this.tools.prefix, ...this.qemuArgv(accel, sock, qmpSock), ...(incoming ? ["-incoming", `file:${incoming}`] : [])], {
      logFile: join(this.dir, "qemu.log"),
      env: this.tools.env,
      ...(options.detach ? { detach: true } : {}),
    });
    this.daemons.push(qemu);
    const rt: VmRuntime = { qemuPid: qemu.pid, swtpmPid: swtpm.pid, accel, startedAt: new Date().toISOString() };
    writeFileSync(this.runtimeFile, `${JSON.stringify(rt, null, 2)}\n`);
    for (let i = 0; i < 100 && !existsSync(qmpSock); i++) {
      if (!isAlive(qemu.pid)) break;
      await sleep(100);
    }
    if (!existsSync(qmpSock)) {
      this.kill();
      const log = existsSync(join(this.dir, "qemu.log")) ? readFileSync(join(this.dir, "qemu.log"), "utf8").trim().split("\n").slice(-3).join(" ") : "";
      throw new UserError(`QEMU did not start: ${log}`, `see ${join(this.dir, "qemu.log")}`);
    }
    if (incoming) await this.resume();
    return rt;
  }

  /** Waits for a restored state to be loaded, then lets the machine run (it was saved paused). */
  private async resume(): Promise<void> {
    const qmp = await Qmp.connect(join(this.dir, "qmp.sock"));
    try {
      const deadline = Date.now() + 300_000;
      for (;;) {
        const m = (await qmp.execute("query-migrate")) as { status?: string; "error-desc"?: string };
        if (m.status === "completed") break;
        if (m.status === "failed") throw new UserError(`restoring the VM's state failed: ${m["error-desc"] ?? "failed"}`, `see ${join(this.dir, "qemu.log")}`);
        if (Date.now() > deadline) throw new UserError("restoring the VM's state took more than 5 minutes");
        await sleep(200);
      }
      await qmp.execute("cont");
    } finally {
      qmp.close();
    }
  }

  private qemuArgv(accel: Accel, tpmSock: string, qmpSock: string): string[] {
    const c = this.config;
    const fwd = Object.entries(c.forwards)
      .map(([guest, host]) => `hostfwd=tcp:127.0.0.1:${host}-:${guest}`)
      .join(",");
    return [
      "qemu-system-x86_64",
      ...firmwareArgv(this.tools, Boolean(c.secureBoot)),
      "-accel",
      accel,
      ...(accel === "kvm" ? ["-cpu", "host"] : ["-cpu", "max"]),
      "-m",
      String(c.memoryMiB),
      "-smp",
      String(c.cpus),
      "-nodefaults",
      "-display",
      "none",
      // A VGA device gives the guest its tty1 (the info screen lives there).
      "-vga",
      "std",
      "-drive",
      `if=pflash,format=raw,file=${join(this.dir, "efivars.fd")}`,
      "-smbios",
      `type=1,uuid=${c.uuid}`,
      // QEMU separates options with ',': a literal one is written twice.
      ...Object.entries(c.credentials ?? {}).flatMap(([name, value]) => [
        "-smbios",
        `type=11,value=io.systemd.credential:${name}=${value.replaceAll(",", ",,")}`,
      ]),
      "-chardev",
      `socket,id=chrtpm,path=${tpmSock}`,
      "-tpmdev",
      "emulator,id=tpm0,chardev=chrtpm",
      "-device",
      "tpm-tis,tpmdev=tpm0",
      "-chardev",
      `file,id=serial0,path=${this.serialLog},append=on`,
      "-serial",
      "chardev:serial0",
      "-drive",
      `if=none,id=disk,file=${join(this.dir, "disk.qcow2")},format=qcow2,discard=unmap`,
      "-device",
      "virtio-blk-pci,drive=disk,bootindex=1",
      "-netdev",
      `user,id=net0,${fwd}`,
      "-device",
      "virtio-net-pci,netdev=net0",
      "-device",
      "virtio-rng-pci",
      "-qmp",
      `unix:${qmpSock},server=on,wait=off`,
    ];
  }

  /**
   * Saves the running machine into `target` (memory, devices, the TPM's state through QEMU's
   * tpm-emulator migration, the disk overlay and UEFI variables) and stops it: Vm.restore continues
   * it, as often as wanted, seconds instead of a boot.
   */
  async saveState(target: string): Promise<void> {
    mkdirSync(target, { recursive: true });
    const qmp = await Qmp.connect(join(this.dir, "qmp.sock"));
    try {
      await qmp.execute("stop");
      await qmp.execute("migrate", { uri: `file:${join(resolve(target), "state")}` });
      const deadline = Date.now() + 300_000;
      for (;;) {
        const info = (await qmp.execute("query-migrate")) as { status?: string; "error-desc"?: string };
        if (info.status === "completed") break;
        if (info.status === "failed" || info.status === "cancelled") throw new UserError(`saving the VM's state failed: ${info["error-desc"] ?? info.status}`);
        if (Date.now() > deadline) throw new UserError("saving the VM's state took more than 5 minutes");
        await sleep(200);
      }
    } finally {
      qmp.close();
    }
    this.kill();
    renameSync(join(this.dir, "disk.qcow2"), join(target, "disk.qcow2"));
    copyFileSync(join(this.dir, "efivars.fd"), join(target, "efivars.fd"));
    writeFileSync(join(target, "vm.json"), `${JSON.stringify(this.config, null, 2)}\n`, { mode: 0o600 });
  }

  /** Runs a qemu-io command on the running VM's disk, through QEMU itself (safe while the guest runs); returns its output. */
  async diskIo(command: string): Promise<string> {
    // HMP's qemu-io prints to QEMU's own output (qemu.log), not to the monitor.
    const log = join(this.dir, "qemu.log");
    const mark = existsSync(log) ? statSync(log).size : 0;
    const qmp = await Qmp.connect(join(this.dir, "qmp.sock"));
    try {
      await qmp.execute("human-monitor-command", { "command-line": `qemu-io disk "${command}"` });
    } finally {
      qmp.close();
    }
    return readFileSync(log).subarray(mark).toString("utf8");
  }

  /** Forwards one more guest TCP port to loopback while the VM runs; returns the host port. */
  async forward(guestPort: number): Promise<number> {
    const hostPort = await freePort();
    const qmp = await Qmp.connect(join(this.dir, "qmp.sock"));
    try {
      const out = await qmp.execute("human-monitor-command", { "command-line": `hostfwd_add net0 tcp:127.0.0.1:${hostPort}-:${guestPort}` });
      if (typeof out === "string" && out.trim()) throw new Error(`hostfwd_add: ${out.trim()}`);
    } finally {
      qmp.close();
    }
    return hostPort;
  }

  /** Waits until the console shows `pattern` after `mark`; fails early if QEMU exits. */
  async waitForConsole(pattern: RegExp, options: { mark: number; timeoutMs: number }): Promise<RegExpMatchArray> {
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      const text = plainText(this.serialSince(options.mark));
      const m = text.match(pattern);
      if (m) return m;
      if (!this.running()) throw this.notUp(`the VM stopped while waiting for ${pattern}`);
      if (Date.now() > deadline) throw this.notUp(`timed out after ${options.timeoutMs / 1000} s waiting for ${pattern} on the console`);
      await sleep(500);
    }
  }

  /** Connects over SSH once the guest accepts the login key. */
  async waitForSsh(timeoutMs: number): Promise<SshSession> {
    const key = this.privateKey();
    const deadline = Date.now() + timeoutMs;
    let last = "";
    for (;;) {
      if (!this.running()) throw this.notUp(`the VM stopped before SSH came up (last: ${last || "no answer"})`);
      try {
        return await Ssh.connect({ port: this.sshPort, user: this.config.user }, key, 8000);
      } catch (e) {
        last = (e as Error).message;
      }
      if (Date.now() > deadline) throw this.notUp(`the VM did not come up: no SSH after ${timeoutMs / 1000} s (last: ${last})`);
      await sleep(2000);
    }
  }

  /** A guest that does not come up is the image's or the machine's problem, not Basalt's: say where to look. */
  private notUp(message: string): UserError {
    const tail = this.consoleTail(1).trim();
    return new UserError(message, `the guest's console is in ${this.serialLog}${tail ? ` (last line: ${tail.slice(0, 160)})` : ""}`);
  }

  privateKey(): string {
    if (!this.config.identity) throw new UserError(`VM ${this.dir} has no login key`, "create it with --identity");
    return readFileSync(this.config.identity, "utf8");
  }

  /** ACPI power button, then waits for QEMU to exit; kills it when the guest ignores the request. */
  async shutdown(timeoutMs = 120_000): Promise<void> {
    const rt = this.runtime();
    if (!rt) return;
    try {
      const qmp = await Qmp.connect(join(this.dir, "qmp.sock"));
      await qmp.execute("system_powerdown");
      qmp.close();
    } catch {
      // QMP gone: fall through to the kill below.
    }
    const deadline = Date.now() + timeoutMs;
    while (isAlive(rt.qemuPid) && Date.now() < deadline) await sleep(500);
    this.kill();
  }

  /** Pulls the plug: QEMU is killed without letting the guest (or its disk cache) finish anything. */
  async powerOff(): Promise<void> {
    const rt = this.runtime();
    if (!rt) return;
    killGroup(rt.qemuPid, "SIGKILL");
    for (let i = 0; i < 50 && isAlive(rt.qemuPid); i++) await sleep(100);
    this.kill();
  }

  /** Stops every process this VM started. */
  kill(): void {
    const rt = existsSync(this.runtimeFile) ? (JSON.parse(readFileSync(this.runtimeFile, "utf8")) as VmRuntime) : undefined;
    for (const pid of [rt?.qemuPid, rt?.swtpmPid]) if (pid) killGroup(pid, "SIGKILL");
    for (const d of this.daemons) d.kill("SIGKILL");
    this.daemons = [];
    rmSync(this.runtimeFile, { force: true });
  }

  /** Waits until QEMU has exited (after a poweroff from inside the guest). */
  async waitStopped(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.running()) {
      if (Date.now() > deadline) throw this.notUp(`the VM did not stop within ${timeoutMs / 1000} s`);
      await sleep(500);
    }
    this.kill();
  }
}
