// basalt fleet …: the operator API from the command line (the dashboard's actions, scriptable).
import { type Command, type CommandUnknownOpts, Option, type OptionValues } from "@commander-js/extra-typings";
import pc from "picocolors";
import * as ids from "../contract/ids.js";
import { UserError } from "../errors.js";
import type { Rollout } from "../fleet/db/fleet-db.js";
import type { RolloutProgress } from "../fleet/fleet.js";
import type { Device } from "../fleet/inventory.js";
import { hashPassword } from "../server/auth.js";
import { ApiClient } from "../server/client.js";
import type { ChannelView } from "../server/views.js";
import { addRolloutOptions, addServerOptions, count, parsedBy, rolloutChange, rolloutOptions, serverConnection } from "./options.js";

function client(o: { server?: string; tokenFile?: string }): ApiClient {
  const { server, token } = serverConnection(o);
  return new ApiClient(server, token);
}

/** The server connection and --json, which every command talking to the server takes. */
const conn = <A extends unknown[], O extends OptionValues, G extends OptionValues>(cmd: Command<A, O, G>) =>
  addServerOptions(cmd).option("--json", "print JSON");

// Identifiers as the contract defines them: the server would refuse anything else, less clearly.
const asImage = parsedBy(ids.imageId, "image");
const asVersion = parsedBy(ids.version, "version");
const asChannel = parsedBy(ids.channel, "channel");
const asMachine = parsedBy(ids.machineId, "machine-id");
const asGroup = parsedBy(ids.group, "group");

const out = (o: { json?: boolean }, value: unknown, text: () => string) => process.stdout.write(o.json ? `${JSON.stringify(value, null, 2)}\n` : text());
const ago = (at: number) => {
  const s = Math.max(0, Math.round((Date.now() - at) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
};
const health = (d: Device) => (d.healthy === null ? pc.dim("unknown") : d.healthy ? pc.green("healthy") : pc.red("unhealthy"));
const e = encodeURIComponent;

function rolloutLine(r: Rollout & { signedBy?: string | null; stats?: { adopters: number; running: number; failures: number } }): string {
  // The key devices must trust to take the release; a release without signed indexes cannot be offered at all.
  const key = r.signedBy === undefined ? "" : r.signedBy ? `  signed by ${r.signedBy.slice(-16)}` : pc.red("  no signed indexes: publish it again");
  const state = r.paused
    ? pc.yellow(`paused${r.pauseReason ? `: ${r.pauseReason}` : ""}`)
    : r.nextStepAt
      ? `next step ${new Date(r.nextStepAt).toISOString()}`
      : "";
  const stats = r.stats ? `  ${r.stats.running} running, ${r.stats.adopters} took it, ${r.stats.failures} failed` : "";
  return `  ${r.image} ${r.channel.padEnd(10)} ${r.version.padEnd(12)} ${`${r.percent}%`.padStart(5)}${stats}${key}  ${state}\n`;
}

export function registerFleetCommands(program: CommandUnknownOpts): void {
  const fleet = program.command("fleet").description("operate a fleet through a basalt server: rollouts, pins, groups, devices");

  conn(fleet.command("status"))
    .description("channels and their rollouts, with how many devices took each release")
    .action(async (o) => {
      const api = client(o);
      const { rollouts } = await api.request<{
        rollouts: (Rollout & { signedBy: string | null; stats: { adopters: number; running: number; failures: number } })[];
      }>("GET", "/rollouts");
      out(o, { rollouts }, () => (rollouts.length ? rollouts.map(rolloutLine).join("") : "no releases offered on any channel\n"));
    });

  conn(fleet.command("devices"))
    .option("--image <id>", "only this image", asImage)
    .option("--version <v>", "booted version", asVersion)
    .option("--channel <name>", "only this channel", asChannel)
    .option("--group <name>", "only this group", asGroup)
    .addOption(new Option("--health <h>", "healthy, unhealthy or unknown").choices(["healthy", "unhealthy", "unknown"] as const))
    .option("--duplicate", "only machine-ids seen from more than one machine")
    .option("--rolled-back", "only devices that rolled back at least once")
    .option("--search <hex>", "part of the machine-id")
    .option("--limit <n>", "at most this many", count("--limit"), 100)
    .description("the device inventory, newest contact first")
    .action(async (o) => {
      const q = new URLSearchParams();
      for (const [key, value] of [
        ["image", o.image],
        ["version", o.version],
        ["channel", o.channel],
        ["group", o.group],
        ["health", o.health],
        ["q", o.search],
        ["limit", String(o.limit)],
      ] as const) {
        if (value !== undefined) q.set(key, value);
      }
      if (o.duplicate) q.set("duplicate", "1");
      if (o.rolledBack) q.set("rolled_back", "1");
      const r = await client(o).request<{ total: number; devices: Device[] }>("GET", `/devices?${q}`);
      out(o, r, () =>
        [
          `${r.total} device${r.total === 1 ? "" : "s"}\n`,
          ...r.devices.map(
            (d) =>
              `  ${d.machine}  ${d.image} ${(d.bootedVersion ?? "?").padEnd(10)} ${d.channel.padEnd(8)} ${health(d)}  ${ago(d.lastSeen)}${d.group ? `  group ${d.group}` : ""}${d.rolledBack.length ? pc.yellow(`  rolled back from ${d.rolledBack.join(", ")}`) : ""}${d.duplicate ? pc.red("  DUPLICATE MACHINE-ID") : ""}\n`,
          ),
        ].join(""),
      );
    });

  conn(fleet.command("device").argument("<image>", "image id", asImage).argument("<machine-id>", "the device's machine-id", asMachine))
    .description("one device: what it runs, its last report and its recent events")
    .action(async (image, machine, o) => {
      const r = await client(o).request<{ device: Device; events: { at: number; kind: string; version: string | null }[] }>(
        "GET",
        `/devices/${e(image)}/${e(machine)}`,
      );
      const d = r.device;
      out(o, r, () =>
        [
          `${d.machine} (${d.image}, ${d.arch}, channel ${d.channel}${d.group ? `, group ${d.group}` : ""})\n`,
          `  running ${d.bootedVersion ?? "?"}, ${health(d)}, ${d.reboots} reboots, first seen ${new Date(d.firstSeen).toISOString()}, last ${ago(d.lastSeen)}\n`,
          ...(d.report ? [`  last report: ${d.report.event}, blessed ${d.report.blessed}, failed units: ${d.report.failed_units.join(" ") || "none"}\n`] : []),
          ...r.events.slice(0, 20).map((ev) => `  ${new Date(ev.at).toISOString()}  ${ev.kind.padEnd(10)} ${ev.version ?? ""}\n`),
        ].join(""),
      );
    });

  addRolloutOptions(
    conn(
      fleet.command("rollout").argument("<image>", "image id", asImage).argument("<channel>", "channel", asChannel).argument("<version>", "version", asVersion),
    ),
  )
    .option("--pause", "stop offering it to devices that do not have it")
    .option("--resume", "offer it again")
    .description("raise, lower, schedule, pause or resume the rollout of a release on a channel")
    .action(async (image, channel, version, o) => {
      const patch = rolloutChange(o);
      if (!Object.keys(patch).length) throw new UserError("nothing to change", "pass --percent, --steps/--every, --pause or --resume");
      const r = await client(o).request<Rollout>("POST", `/rollouts/${e(image)}/${e(channel)}/${e(version)}`, patch);
      out(o, r, () => rolloutLine(r));
    });

  conn(
    fleet.command("progress").argument("<image>", "image id", asImage).argument("<channel>", "channel", asChannel).argument("<version>", "version", asVersion),
  )
    .description("how far a rollout got: offered share, devices that took and run it, failures")
    .action(async (image, channel, version, o) => {
      const p = await client(o).request<RolloutProgress>("GET", `/rollouts/${e(image)}/${e(channel)}/${e(version)}`);
      out(
        o,
        p,
        () =>
          `${rolloutLine(p.rollout)}  ${p.population} devices on ${channel}; ${p.stats.adopters} took it, ${p.stats.running} run it, ${p.stats.rolledBack} rolled back, ${p.stats.unhealthy} unhealthy\n`,
      );
    });

  addRolloutOptions(
    conn(
      fleet
        .command("promote")
        .argument("<image>", "image id", asImage)
        .argument("<version>", "version", asVersion)
        .requiredOption("--channel <name>", "channel to offer it on", asChannel),
    ),
  )
    .description("offer an uploaded release on a channel (e.g. from beta to stable)")
    .action(async (image, version, o) => {
      const c = await client(o).request<ChannelView>("POST", `/channels/${e(o.channel)}/promote`, { id: image, version, ...rolloutOptions(o) });
      out(o, c, () => `${c.channel} now offers ${c.rollouts.map((r) => `${r.version} (${r.percent}%)`).join(", ")}\n`);
    });

  conn(fleet.command("pin").argument("<image>", "image id", asImage).argument("<version>", "version", asVersion))
    .option("--device <machine-id>", "the device to pin", asMachine)
    .option("--group <name>", "the group to pin", asGroup)
    .description("hold a device or a group on a version (also to move it there ahead of a rollout)")
    .action(async (image, version, o) => {
      const [scope, target] = o.device ? ["device", o.device] : o.group ? ["group", o.group] : [];
      if (!scope || !target || (o.device && o.group)) throw new UserError("pass exactly one of --device or --group");
      const p = await client(o).request("PUT", `/pins/${e(image)}/${scope}/${e(target)}`, { version });
      out(o, p, () => `${scope} ${target} is pinned to ${image} ${version}\n`);
    });

  conn(fleet.command("unpin").argument("<image>", "image id", asImage))
    .option("--device <machine-id>", "the device to unpin", asMachine)
    .option("--group <name>", "the group to unpin", asGroup)
    .description("let a device or group follow its channel's rollouts again")
    .action(async (image, o) => {
      const [scope, target] = o.device ? ["device", o.device] : o.group ? ["group", o.group] : [];
      if (!scope || !target || (o.device && o.group)) throw new UserError("pass exactly one of --device or --group");
      const r = await client(o).request<{ removed: boolean }>("DELETE", `/pins/${e(image)}/${scope}/${e(target)}`);
      out(o, r, () => (r.removed ? `${scope} ${target} follows its channel again\n` : `${scope} ${target} was not pinned\n`));
    });

  conn(
    fleet
      .command("group")
      .argument("<image>", "image id", asImage)
      .argument("<group>", 'group name, or "-" for none', (v: string) => (v === "-" ? v : asGroup(v)))
      .argument("<machine-ids...>", "the devices' machine-ids", (v: string, previous: string[] = []) => [...previous, asMachine(v)]),
  )
    .description("put devices into a group (groups can be pinned)")
    .action(async (image, group, machines, o) => {
      const r = await client(o).request<{ changed: number }>("POST", `/groups/${e(image)}/${e(group)}`, { machines });
      out(o, r, () => `${r.changed} device${r.changed === 1 ? "" : "s"} ${group === "-" ? "left their group" : `now in ${group}`}\n`);
    });

  conn(fleet.command("device-token").argument("<image>", "image id", asImage).argument("<machine-id>", "the device's machine-id", asMachine))
    .description("the report token to provision on a device (systemd credential basalt.report-token)")
    .action(async (image, machine, o) => {
      const r = await client(o).request<{ token: string; credential: string }>("POST", `/device-tokens/${e(image)}/${e(machine)}`);
      out(o, r, () => `${r.token}\n`);
    });

  fleet
    .command("hash-password")
    .description("read a password on stdin and print the hash for an operators file line (NAME:HASH)")
    .action(async () => {
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      const password = Buffer.concat(chunks)
        .toString("utf8")
        .replace(/\r?\n$/, "");
      process.stdout.write(`${hashPassword(password)}\n`);
    });
}
