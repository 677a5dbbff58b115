// A value each path parameter of the server's routes could really have: tests that walk the route
// table fill URLs with these, so only what they vary stands between a request and its handler.
export const MACHINE = "0123456789abcdef0123456789abcdef";

export const ROUTE_SAMPLES: Record<string, string> = {
  channel: "stable",
  image: "demo",
  id: "demo",
  arch: "x86-64",
  machine: MACHINE,
  booted: "1.0",
  version: "1.0",
  boot: "f".repeat(32),
  file: "demo_1.0.efi",
  group: "lab",
  scope: "device",
  target: MACHINE,
};

/** `url` (a route pattern) with each `:param` replaced by `params[param]`, else its sample. */
export function fillRoute(url: string, params: Record<string, string> = {}): string {
  return url.replace(/:(\w+)/g, (_, name: string) => {
    const v = params[name] ?? ROUTE_SAMPLES[name];
    if (v === undefined) throw new Error(`no sample value for :${name} in ${url}`);
    return encodeURIComponent(v);
  });
}
