// Where devices and the server meet: the routes of `basalt serve` a device calls, written once. The
// server registers these patterns, the image's sysupdate transfers and report script are rendered
// from them with systemd specifiers or shell variables in place of values, and tests and
// benchmarks build device URLs with them.
//
//   GET  <base>/v1/<channel>/<image id>/<arch>/<machine-id>/<booted version>/<boot id>/<file>
//   POST <base>/v1/<channel>/<image id>/<arch>/<machine-id>/report
export const DEVICE_ROUTES = {
  /** Index, signature and release files, for a client that does not send its boot id (older images). */
  file: "/v1/:channel/:image/:arch/:machine/:booted/:file",
  /** The same with the boot id (`%b`): what Basalt images send. */
  bootFile: "/v1/:channel/:image/:arch/:machine/:booted/:boot/:file",
  report: "/v1/:channel/:image/:arch/:machine/report",
} as const;

export interface DeviceIdentity {
  channel: string;
  image: string;
  arch: string;
  machine: string;
}

export interface DeviceBoot extends DeviceIdentity {
  booted: string;
  boot?: string;
}

/**
 * `pattern` with every `:name` replaced by `values[name]`: URL-encoded, or as given when `raw` (for
 * systemd specifiers and shell variables, which must reach their interpreter untouched).
 */
export function renderRoute(pattern: string, values: Record<string, string | undefined>, raw = false): string {
  return pattern.replace(/:(\w+)/g, (_, name: string) => {
    const v = values[name];
    if (v === undefined) throw new Error(`${pattern}: no value for :${name}`);
    return raw ? v : encodeURIComponent(v);
  });
}

const trim = (base: string) => base.replace(/\/+$/, "");

/** A device's URL for `file` (SHA256SUMS, its signature, or a release file). */
export function deviceFileUrl(base: string, d: DeviceBoot, file: string): string {
  return trim(base) + renderRoute(d.boot ? DEVICE_ROUTES.bootFile : DEVICE_ROUTES.file, { ...d, file });
}

/** Where a device posts its report. */
export function reportUrl(base: string, d: DeviceIdentity): string {
  return trim(base) + renderRoute(DEVICE_ROUTES.report, { ...d });
}

/**
 * The source path of the image's sysupdate transfers: the device's own view of the channel, with
 * sysupdate's specifiers for image id, architecture, machine-id, booted version and boot id
 * (sysupdate.d(5)); the file names follow it.
 */
export function transferSourcePath(base: string, channel: string): string {
  const dir = DEVICE_ROUTES.bootFile.replace(/\/:file$/, "/");
  return trim(base) + renderRoute(dir, { channel, image: "%M", arch: "%a", machine: "%m", booted: "%A", boot: "%b" }, true);
}

/** The report URL in the image's report script, with the shell variables that hold image id and machine-id. */
export function reportUrlTemplate(base: string, channel: string, arch: string, vars: { image: string; machine: string }): string {
  return trim(base) + renderRoute(DEVICE_ROUTES.report, { channel, arch, ...vars }, true);
}
