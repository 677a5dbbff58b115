// Small appliance fixtures made by the tests in temporary directories, removed afterwards.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach } from "vitest";

export const TEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeHrUB/sX08C6rTTgngDkvlAoDok5/GSsQroBs+tGoc test@basalt";

const made: string[] = [];
afterEach(() => {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Creates a directory with the given files (path -> content) and returns it. */
export function fixture(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "basalt-test-"));
  made.push(dir);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

export function appliance(toml: string, extra: Record<string, string> = {}): string {
  return fixture({ "appliance.toml": toml, authorized_keys: `${TEST_KEY}\n`, ...extra });
}
