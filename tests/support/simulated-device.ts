// A device that talks to basalt serve the way a real appliance does, over HTTP: the stock client's
// index and signature fetched at once with the booted version and boot id in the path, the newest
// offered version's files downloaded (UKI last), a reboot into it, and the report unit's posts.
// The browser test, the fleet tests and the load benchmark drive fleets of these.
import { randomBytes } from "node:crypto";
import { deviceFileUrl, reportUrl } from "../../src/contract/urls.js";
import { compareVersions } from "../../src/contract/version.js";
import { parseSha256Sums } from "../../src/release/sha256sums.js";

export interface SimulatedDeviceOptions {
  server: string;
  image: string;
  channel: string;
  version: string;
  machine?: string;
  /** The report token (basalt.report-token); without one reports are not sent. */
  token?: string;
  arch?: string;
}

export interface PollResult {
  /** The newest version the index offers, if newer than the booted one. */
  offered?: string;
  status: number;
  ms: number;
}

const hex = (bytes: number) => randomBytes(bytes).toString("hex");

export class SimulatedDevice {
  readonly machine: string;
  readonly image: string;
  readonly channel: string;
  readonly arch: string;
  version: string;
  bootId = hex(16);
  /** A version whose files were fetched and that boots next. */
  installed?: string;
  private files: string[] = [];

  constructor(private readonly o: SimulatedDeviceOptions) {
    this.machine = o.machine ?? hex(16);
    this.image = o.image;
    this.channel = o.channel;
    this.arch = o.arch ?? "x86-64";
    this.version = o.version;
  }

  private url(file: string): string {
    return deviceFileUrl(this.o.server, { ...this, booted: this.version, boot: this.bootId }, file);
  }

  /** One check, as systemd-pull does it: SHA256SUMS and SHA256SUMS.gpg at the same time. */
  async poll(): Promise<PollResult> {
    const start = performance.now();
    const [index, sig] = await Promise.all([fetch(this.url("SHA256SUMS")), fetch(this.url("SHA256SUMS.gpg"))]);
    const text = await index.text();
    await sig.arrayBuffer();
    const ms = performance.now() - start;
    const status = index.ok && sig.ok ? 200 : index.ok ? sig.status : index.status;
    if (status !== 200) return { status, ms };
    const entries = parseSha256Sums(text);
    const prefix = `${this.image}_`;
    const versions = entries.filter((e) => e.name.startsWith(prefix) && e.name.endsWith(".efi")).map((e) => e.name.slice(prefix.length, -4));
    const newest = versions.sort(compareVersions).at(-1);
    if (newest && compareVersions(newest, this.version) > 0) {
      this.files = entries.filter((e) => e.name.startsWith(`${prefix}${newest}.`)).map((e) => e.name);
      return { offered: newest, status, ms };
    }
    return { status, ms };
  }

  /** Polls and, when something newer is offered, downloads it (UKI last, as the transfers are ordered). */
  async update(): Promise<string | undefined> {
    const { offered } = await this.poll();
    if (!offered) return undefined;
    const ordered = [...this.files.filter((f) => !f.endsWith(".efi")), ...this.files.filter((f) => f.endsWith(".efi"))];
    for (const f of ordered) {
      const r = await fetch(this.url(f));
      await r.arrayBuffer();
      if (!r.ok) throw new Error(`${f}: ${r.status}`);
    }
    this.installed = offered;
    return offered;
  }

  /** Reboots: into the installed version, or (a failed boot) back to the one it ran. */
  reboot(options: { healthy?: boolean } = {}): void {
    this.bootId = hex(16);
    if (this.installed && options.healthy !== false) this.version = this.installed;
    this.installed = undefined;
  }

  /** The report unit's post; returns the HTTP status. */
  async report(event: "boot" | "update" | "unhealthy", extra: { healthy?: boolean; entries?: string[]; reason?: string } = {}): Promise<number> {
    if (!this.o.token) throw new Error("this device has no report token");
    const healthy = extra.healthy ?? event !== "unhealthy";
    const body = {
      event,
      version: this.version,
      boot_id: this.bootId,
      blessed: healthy ? "good" : "indeterminate",
      healthy,
      ...(extra.reason ? { reason: extra.reason } : {}),
      failed_units: healthy ? [] : ["basalt-health.service"],
      uptime_seconds: 120,
      var_free_bytes: 5e9,
      entries: extra.entries ?? [`${this.image}_${this.version}.efi`],
    };
    const r = await fetch(reportUrl(this.o.server, this), {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${this.o.token}` },
      body: JSON.stringify(body),
    });
    await r.arrayBuffer();
    return r.status;
  }
}
