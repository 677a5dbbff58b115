// Where releases are in an appliance directory: written by `basalt release`, read by `basalt publish`
// (which must not reach the signing code to find them).
import { join } from "node:path";

export function releasesDir(applianceDir: string): string {
  return join(applianceDir, "out", "releases");
}
