// basalt vm start|ssh|stop|status: boot a built image in QEMU the way a device runs it.
import { createReadStream, existsSync, statSync, unwatchFile, watchFile } from "node:fs";
import { type CommandUnknownOpts, Option } from "@commander-js/extra-typings";
import pc from "picocolors";
import { UserError } from "../errors.js";
import { runInteractive } from "../process/run.js";
import { createReporter, runReported } from "../report/reporter.js";
import { Vm } from "../vm/machine.js";
import { waitForSshBanner } from "../vm/ssh.js";
import { resolveVmTarget } from "../vm/target.js";
import { ensureVmTools, type VmTools } from "../vm/tools.js";

/** How long `vm ssh` waits for a booting guest: a first boot under TCG takes about a minute. */
const SSH_WAIT_MS = 5 * 60_000;

const parseIntOption = (v: string) => {
  const n = Number.parseInt(v, 10);
  if (!Number.isFinite(n) || n <= 0) throw new UserError(`not a positive number: ${v}`);
  return n;
};

function parseUuid(v: string): string {
  // All zeros or all ones is what firmware says when it has no UUID; systemd then makes a random machine-id.
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v) || /^[0-]+$|^[f-]+$/i.test(v))
    throw new UserError(`--uuid: not a usable UUID: ${v}`);
  return v.toLowerCase();
}

function parseCredentials(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list) {
    const at = item.indexOf("=");
    if (at < 1) throw new UserError(`--credential ${item}: expected NAME=VALUE`);
    out[item.slice(0, at)] = item.slice(at + 1);
  }
  return out;
}

/** The VM's firmware, as `vm start` and `vm status` show it. */
function firmwareOf(vm: Vm): string {
  const sb = vm.config.secureBoot;
  return sb ? `UEFI with Secure Boot (started ${sb === "setup" ? "in setup mode" : "with vendor keys"})` : "UEFI";
}

/** Follows the serial log onto stdout from byte `from` until `stop` is called. */
function followConsole(file: string, from: number): () => void {
  let pos = from;
  const pump = () => {
    if (!existsSync(file)) return;
    const size = statSync(file).size;
    if (size <= pos) return;
    createReadStream(file, { start: pos, end: size - 1 }).pipe(process.stdout, { end: false });
    pos = size;
  };
  watchFile(file, { interval: 300 }, pump);
  return () => unwatchFile(file, pump);
}

/** The existing VM a command names, with the tools it runs on. */
async function openTargetVm(target: string, o: { name: string; vmDir?: string }): Promise<{ machine: Vm; tools: VmTools }> {
  const t = resolveVmTarget(target, o.name, o.vmDir);
  const tools = await runReported(createReporter({ quiet: true }), (reporter) => ensureVmTools(reporter));
  return { machine: Vm.open(t.vmDir, tools), tools };
}

async function sshArgv(vm: Vm, tools: VmTools, identity: string | undefined): Promise<string[]> {
  const key = identity ?? vm.config.identity;
  const base = [
    "-p",
    String(vm.sshPort),
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    ...(key ? ["-i", key, "-o", "IdentitiesOnly=yes"] : []),
    `${vm.config.user}@127.0.0.1`,
  ];
  // The host's ssh when it has one; otherwise the tools tree's.
  const hostSsh = ["/usr/bin/ssh", "/bin/ssh"].find((p) => existsSync(p));
  return hostSsh ? [hostSsh, ...base] : [...tools.prefix, "ssh", ...base];
}

export function registerVmCommands(program: CommandUnknownOpts): void {
  const vm = program
    .command("vm")
    .description("run a built image in QEMU (UEFI, TPM2, SMBIOS UUID) like a device")
    // Options belong to the command they follow: `vm ssh` passes those after its target on (below).
    .enablePositionalOptions();

  vm.command("start")
    .argument("<target>", "appliance directory, VM directory or .raw disk image")
    .option("--name <name>", "VM name (VMs live in DIR/out/vms/NAME)", "default")
    .option("--vm-dir <dir>", "VM directory (overrides --name)")
    .option("--identity <key>", "private key that logs in (default: the appliance's keys/login_ed25519)")
    .option("--user <user>", "user to log in as (default: the appliance's user)")
    .option("--memory <MiB>", "guest memory", parseIntOption, 2048)
    .option("--cpus <n>", "guest CPUs", parseIntOption, 2)
    .option("--forward <port...>", "also forward these guest TCP ports to loopback")
    .option("--credential <name=value...>", "pass a systemd credential through SMBIOS (e.g. basalt.report-token=…)")
    .option("--uuid <uuid>", "SMBIOS system UUID of a new VM: its machine-id (default: random)", parseUuid)
    .addOption(
      new Option(
        "--secure-boot [keys]",
        "a new VM gets Secure Boot firmware (SMM; TCG where KVM lacks it), its variables in setup mode (systemd-boot enrolls the image's keys on the first boot) or with vendor (Microsoft) keys, which refuse the image",
      )
        .choices(["setup", "vendor"] as const)
        .preset("setup" as const),
    )
    .option("--console", "show the serial console live")
    .option("--ssh", "open an SSH session once the guest is up; stop the VM when it ends")
    .option("--detach", "leave the VM running in the background")
    .option("--json", "print the VM's settings as JSON once it runs")
    .description("boot the image on a copy-on-write overlay; the built image stays pristine")
    .action(async (target, o) => {
      const t = resolveVmTarget(target, o.name, o.vmDir);
      const reporter = createReporter({ quiet: Boolean(o.json) });
      const { machine, tools, rt, mark } = await runReported(reporter, async () => {
        const tools = await ensureVmTools(reporter);
        let machine: Vm;
        if (existsSync(`${t.vmDir}/vm.json`)) {
          machine = Vm.open(t.vmDir, tools);
          // Firmware and its variables belong to the VM: another choice is another VM.
          if (o.secureBoot && o.secureBoot !== machine.config.secureBoot)
            throw new UserError(
              `VM ${machine.dir} was made ${machine.config.secureBoot ? `with --secure-boot ${machine.config.secureBoot}` : "without Secure Boot"}`,
              "start another one with --name, or remove this one",
            );
        } else {
          if (!t.image || !existsSync(t.image)) throw new UserError(`${t.image ?? target}: no built image`, "run 'basalt build' first");
          const identity = o.identity ?? t.identity;
          machine = await Vm.create(t.vmDir, t.image, tools, {
            user: o.user ?? t.user ?? "admin",
            ...(identity ? { identity } : {}),
            memoryMiB: o.memory,
            cpus: o.cpus,
            ports: (o.forward ?? []).map(parseIntOption),
            ...(o.credential ? { credentials: parseCredentials(o.credential) } : {}),
            ...(o.uuid ? { uuid: o.uuid } : {}),
            ...(o.secureBoot ? { secureBoot: o.secureBoot } : {}),
          });
        }
        const mark = machine.serialMark();
        const rt = await machine.start({ detach: Boolean(o.detach) });
        return { machine, tools, rt, mark };
      });
      const info = {
        vmDir: machine.dir,
        accel: rt.accel,
        sshPort: machine.sshPort,
        forwards: machine.config.forwards,
        uuid: machine.config.uuid,
        secureBoot: machine.config.secureBoot ?? null,
        serial: machine.serialLog,
      };
      if (o.json) process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
      else
        process.stderr.write(
          `${pc.green("started")} ${machine.dir} (${rt.accel}${rt.accel === "tcg" ? ", no usable KVM: slower" : ""}${machine.config.secureBoot ? `, ${firmwareOf(machine)}` : ""})\n  ssh:     basalt vm ssh ${machine.dir}\n  console: ${machine.serialLog}\n`,
        );
      if (o.detach) return;
      const stopFollow = o.console ? followConsole(machine.serialLog, mark) : () => {};
      let stopping = false;
      const stop = async () => {
        if (stopping) return;
        stopping = true;
        stopFollow();
        process.stderr.write("\nshutting the VM down…\n");
        await machine.shutdown();
      };
      process.on("SIGINT", () => void stop());
      process.on("SIGTERM", () => void stop());
      if (o.ssh) {
        process.stderr.write("waiting for SSH…\n");
        const session = await machine.waitForSsh(600_000);
        session.close();
        stopFollow();
        await runInteractive(await sshArgv(machine, tools, o.identity), { env: tools.env });
        await stop();
        return;
      }
      await machine.waitStopped(Number.MAX_SAFE_INTEGER);
      stopFollow();
    });

  vm.command("ssh")
    .argument("<target>", "appliance directory or VM directory")
    .argument(
      "[command...]",
      "command to run instead of a shell: every word after the target (options too), or after --",
      // `vm ssh DIR -- cmd`: the -- passed through is ours, not the remote command's first word.
      (word: string, words?: string[]) => (words === undefined && word === "--" ? [] : [...(words ?? []), word]),
    )
    .option("--name <name>", "VM name", "default")
    .option("--vm-dir <dir>", "VM directory (overrides --name)")
    .option("--identity <key>", "private key to log in with")
    // `basalt vm ssh DIR sudo systemctl start --wait x`: --wait is the remote command's, not ours.
    .passThroughOptions()
    .description("log in to a running VM with the appliance's login key")
    .action(async (target, command, o) => {
      const { machine, tools } = await openTargetVm(target, o);
      if (!machine.running()) throw new UserError(`VM ${machine.dir} is not running`, `start it with 'basalt vm start ${target}'`);
      // A VM started a moment ago (vm start --detach) is still booting: wait for its SSH server.
      if (!(await waitForSshBanner(machine.sshPort, 1000, () => machine.running()))) {
        process.stderr.write("waiting for the VM's SSH server…\n");
        if (!(await waitForSshBanner(machine.sshPort, SSH_WAIT_MS, () => machine.running())))
          throw new UserError(`VM ${machine.dir}: no SSH server answered within ${SSH_WAIT_MS / 60_000} minutes`, `see its console: ${machine.serialLog}`);
      }
      process.exitCode = await runInteractive([...(await sshArgv(machine, tools, o.identity)), ...command], { env: tools.env });
    });

  vm.command("stop")
    .argument("<target>", "appliance directory or VM directory")
    .option("--name <name>", "VM name", "default")
    .option("--vm-dir <dir>", "VM directory (overrides --name)")
    .option("--power-off", "pull the plug instead of an ACPI shutdown")
    .description("shut a VM down (ACPI power button, then kill after 2 minutes)")
    .action(async (target, o) => {
      const { machine } = await openTargetVm(target, o);
      if (o.powerOff) await machine.powerOff();
      else await machine.shutdown();
    });

  vm.command("status")
    .argument("<target>", "appliance directory or VM directory")
    .option("--name <name>", "VM name", "default")
    .option("--vm-dir <dir>", "VM directory (overrides --name)")
    .option("--json", "print as JSON")
    .description("show a VM's settings and whether it runs")
    .action(async (target, o) => {
      const { machine } = await openTargetVm(target, o);
      const status = { vmDir: machine.dir, running: machine.running(), runtime: machine.runtime() ?? null, ...machine.config };
      if (o.json) process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
      else
        process.stdout.write(
          `${machine.dir}: ${status.running ? pc.green("running") : "stopped"}\n  image:    ${status.image}\n  uuid:     ${status.uuid}\n  firmware: ${firmwareOf(machine)}\n  ssh:      127.0.0.1:${machine.sshPort} as ${status.user}\n`,
        );
    });
}
