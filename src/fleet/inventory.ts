// What the server learns about a device, from its polls (the stock client's URL carries the booted
// version and the boot id), its downloads and its reports. Each function takes the device as it
// was and returns it as it is now plus the events to record; they are pure, so every storage
// backend applies them the same way inside its own transaction.
import { badVersions, type DeviceReport, installedVersions } from "../contract/report.js";
import { compareVersions } from "../contract/version.js";

export interface Device {
  image: string;
  machine: string;
  arch: string;
  channel: string;
  /** Set by an operator; a group can be pinned to a version. */
  group: string | null;
  firstSeen: number;
  lastSeen: number;
  bootedVersion: string | null;
  bootId: string | null;
  /** The boot id before the current one: seeing it again means two machines share a machine-id. */
  prevBootId: string | null;
  bootSeenAt: number | null;
  reboots: number;
  /** The signed index this device is held on for a short while (index and signature must match): its id. */
  viewIndex: string | null;
  viewUntil: number | null;
  /** The newest version whose UKI (the last file of an update) the device downloaded. */
  downloadedVersion: string | null;
  downloadedAt: number | null;
  /** Whether that download is evidence (see DeviceEvent.evidence): then a rollback inferred from it is too. */
  downloadedEvidence: boolean;
  /** Versions this device rolled back from, each counted once. */
  rolledBack: string[];
  duplicate: boolean;
  healthy: boolean | null;
  report: DeviceReport | null;
  reportAt: number | null;
}

export type EventKind = "seen" | "boot" | "booted" | "download" | "downloaded" | "rollback" | "unhealthy" | "healthy" | "report" | "duplicate";

export interface DeviceEvent {
  kind: EventKind;
  at: number;
  version: string | null;
  /**
   * Whether the event may count toward a rollout's health (the automatic pause): what an
   * authenticated report says, or what a device without a token proved at a cost (docs/fleet.md,
   * "Evidence"). Anonymous polls alone are never evidence.
   */
  evidence?: boolean;
  detail?: Record<string, unknown>;
}

export interface Change {
  device: Device;
  events: DeviceEvent[];
}

export interface Poll {
  image: string;
  arch: string;
  machine: string;
  channel: string;
  booted: string;
  /** The boot id (`%b`), when the device's URL carries it. */
  boot?: string;
  at: number;
  /** The signed index the device should see now (its id), and how long it keeps it once chosen. */
  index: string;
  holdMs: number;
}

/** A device seen for the first time: nothing booted, downloaded or reported yet. */
export function newDevice(image: string, machine: string, arch: string, channel: string, at: number): Device {
  return {
    image,
    machine,
    arch,
    channel,
    group: null,
    firstSeen: at,
    lastSeen: at,
    bootedVersion: null,
    bootId: null,
    prevBootId: null,
    bootSeenAt: null,
    reboots: 0,
    viewIndex: null,
    viewUntil: null,
    downloadedVersion: null,
    downloadedAt: null,
    downloadedEvidence: false,
    rolledBack: [],
    duplicate: false,
    healthy: null,
    report: null,
    reportAt: null,
  };
}

/** A device is back on an older version after it fetched a newer one and booted since: a rollback. */
function inferRollback(d: Device, events: DeviceEvent[], at: number): void {
  const v = d.downloadedVersion;
  if (!v || !d.bootedVersion || d.rolledBack.includes(v)) return;
  if (compareVersions(d.bootedVersion, v) >= 0) return;
  if (d.bootSeenAt === null || d.downloadedAt === null || d.bootSeenAt <= d.downloadedAt) return;
  d.rolledBack = [...d.rolledBack, v];
  events.push({ kind: "rollback", at, version: v, evidence: d.downloadedEvidence, detail: { running: d.bootedVersion, how: "inferred from polls" } });
}

/**
 * Records who is running what from the booted version and boot id a device reports or polls with;
 * `evidence` when an authenticated report says so.
 */
function observeBoot(d: Device, events: DeviceEvent[], version: string, bootId: string | undefined, at: number, evidence: boolean): void {
  if (bootId && bootId !== d.bootId) {
    if (d.bootId !== null) {
      d.reboots += 1;
      // A machine never returns to its previous boot; two machines with one machine-id alternate.
      if (bootId === d.prevBootId && !d.duplicate) {
        d.duplicate = true;
        events.push({ kind: "duplicate", at, version, detail: { bootIds: [d.bootId, bootId] } });
      }
      events.push({ kind: "boot", at, version, detail: { previous: d.bootId } });
    }
    d.prevBootId = d.bootId;
    d.bootId = bootId;
    d.bootSeenAt = at;
  }
  if (version !== d.bootedVersion) {
    events.push({ kind: "booted", at, version, evidence, detail: { previous: d.bootedVersion } });
    d.bootedVersion = version;
  }
  inferRollback(d, events, at);
}

/** The signed index a device was shown (its id), and on which channel, boot and version. */
export interface HeldView {
  index: string | null;
  until: number | null;
  channel: string;
  bootId: string | null;
  bootedVersion: string | null;
}

/**
 * The signed index a request at `at` still gets because its device was shown it: the index and
 * signature of one check must match. A new boot, version or channel is a new check.
 */
export function heldIndex(held: HeldView, req: { channel: string; booted: string; boot?: string }, at: number): string | undefined {
  const holds =
    held.until !== null && held.until > at && held.channel === req.channel && held.bootedVersion === req.booted && (!req.boot || req.boot === held.bootId);
  return holds ? (held.index ?? undefined) : undefined;
}

export function applyPoll(prev: Device | undefined, p: Poll): Change & { index: string } {
  const events: DeviceEvent[] = [];
  const d: Device = prev ? { ...prev } : newDevice(p.image, p.machine, p.arch, p.channel, p.at);
  if (!prev) events.push({ kind: "seen", at: p.at, version: p.booted, detail: { channel: p.channel } });
  // Keep the index chosen by whichever request of this check came first (asked before the poll
  // updates the boot and channel it compares with).
  const held = heldIndex({ index: d.viewIndex, until: d.viewUntil, channel: d.channel, bootId: d.bootId, bootedVersion: d.bootedVersion }, p, p.at);
  d.lastSeen = p.at;
  d.arch = p.arch;
  d.channel = p.channel;
  observeBoot(d, events, p.booted, p.boot, p.at, false);
  if (held === undefined) {
    d.viewIndex = p.index;
    d.viewUntil = p.at + p.holdMs;
  }
  return { device: d, events, index: held ?? p.index };
}

export interface Download {
  version: string;
  file: string;
  kind: string;
  at: number;
  /** Every byte of the file was sent by this server (not a redirect, not a part). */
  complete: boolean;
  /** When the version was first offered to this device (its rollout, or its pin). */
  offeredSince: number;
}

/** A device's download of a release file; `prev` is the device as its earlier polls left it. */
export function applyDownload(prev: Device, dl: Download): Change {
  const d: Device = { ...prev };
  d.lastSeen = dl.at;
  const events: DeviceEvent[] = [{ kind: "download", at: dl.at, version: dl.version, detail: { file: dl.file, kind: dl.kind, complete: dl.complete } }];
  // The UKI is the last transfer: once it is fetched the version is installed and boots next.
  if (dl.kind === "uki" && (!d.downloadedVersion || compareVersions(dl.version, d.downloadedVersion) >= 0)) {
    // Without a token, a device proves it took a release only at a cost: the whole UKI, fetched
    // from here, by a machine-id that polled before the release was offered to it.
    const evidence = dl.complete && prev.firstSeen < dl.offeredSince;
    d.downloadedVersion = dl.version;
    d.downloadedAt = dl.at;
    d.downloadedEvidence = evidence;
    events.push({ kind: "downloaded", at: dl.at, version: dl.version, evidence });
  }
  return { device: d, events };
}

export function applyReport(
  prev: Device | undefined,
  r: DeviceReport,
  meta: { image: string; machine: string; arch: string; channel: string; at: number },
): Change {
  const { at } = meta;
  const d: Device = prev ? { ...prev } : newDevice(meta.image, meta.machine, meta.arch, meta.channel, at);
  const events: DeviceEvent[] = [];
  if (!prev) events.push({ kind: "seen", at, version: r.version, detail: { channel: meta.channel, by: "report" } });
  d.lastSeen = at;
  // Everything an authenticated report says is evidence.
  observeBoot(d, events, r.version, r.boot_id, at, true);
  // A newer UKI in /EFI/Linux is a version the device took (installed, in trial or given up on).
  for (const v of installedVersions(meta.image, r.entries)) {
    if (compareVersions(v, r.version) <= 0) continue;
    if (d.downloadedVersion === v && d.downloadedEvidence) continue;
    if (d.downloadedVersion && compareVersions(v, d.downloadedVersion) < 0) continue;
    if (d.downloadedVersion !== v) d.downloadedAt = at;
    d.downloadedVersion = v;
    d.downloadedEvidence = true;
    events.push({ kind: "downloaded", at, version: v, evidence: true, detail: { how: "reported installed" } });
  }
  for (const v of badVersions(meta.image, r.entries)) {
    if (d.rolledBack.includes(v)) continue;
    d.rolledBack = [...d.rolledBack, v];
    events.push({ kind: "rollback", at, version: v, evidence: true, detail: { running: r.version, how: "boot loader marked it bad" } });
  }
  if (!r.healthy && (d.healthy !== false || r.event === "unhealthy")) {
    events.push({ kind: "unhealthy", at, version: r.version, evidence: true, detail: { reason: r.reason ?? null, failed: r.failed_units } });
  } else if (r.healthy && d.healthy === false) {
    events.push({ kind: "healthy", at, version: r.version, evidence: true });
  }
  d.healthy = r.healthy;
  d.report = r;
  d.reportAt = at;
  events.push({ kind: "report", at, version: r.version, evidence: true, detail: r as unknown as Record<string, unknown> });
  return { device: d, events };
}
