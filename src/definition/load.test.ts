import { describe, expect, it } from "vitest";
import { appliance } from "../../tests/support/fixtures.js";
import { DefinitionError } from "../errors.js";
import { loadAppliance } from "./load.js";

function problemsOf(dir: string): string[] {
  try {
    loadAppliance(dir);
  } catch (e) {
    if (e instanceof DefinitionError) return e.message.split("\n").map((l) => l.replace(/^.*appliance\.toml/, "appliance.toml"));
    throw e;
  }
  throw new Error("expected a DefinitionError");
}

describe("loadAppliance", () => {
  it("applies defaults to a minimal definition", () => {
    const { appliance: a } = loadAppliance(appliance('id = "demo"\nversion = "1.0"\n'));
    expect(a.release).toBe("trixie");
    expect(a.user).toEqual({ name: "admin", authorized_keys: "authorized_keys" });
    expect(a.features).toEqual({
      ab_updates: true,
      encrypted_var: true,
      console_info: true,
      debug_login: false,
      factory_reset: true,
      storage_target: false,
    });
    expect(a.disk.slot_size).toBe("1G");
  });

  it("reports unknown keys, wrong types, bad versions and missing files together, with lines", () => {
    const dir = appliance(
      [
        'id = "demo"',
        'version = "v1_0"',
        'packages = "htop"',
        "colour = 3",
        "",
        "[user]",
        'authorized_keys = "nope.pub"',
        "",
        "[features]",
        'ab_updates = "yes"',
        "",
      ].join("\n"),
    );
    expect(problemsOf(dir)).toEqual([
      expect.stringMatching(/^appliance.toml:2 version: expected a version/),
      'appliance.toml:3 packages: expected array, got string "htop"',
      "appliance.toml:4 colour: unknown key",
      expect.stringMatching(/^appliance.toml:7 user.authorized_keys: file not found: .*nope\.pub$/),
      'appliance.toml:10 features.ab_updates: expected boolean, got string "yes"',
    ]);
  });

  it("reports a missing required key", () => {
    expect(problemsOf(appliance('version = "1.0"\n'))).toEqual(["appliance.toml id: required key is missing"]);
  });

  it("reports TOML syntax errors with their line", () => {
    expect(problemsOf(appliance('id = "demo"\nversion = ]\nrelease = "trixie"\n'))[0]).toMatch(/^appliance.toml:2: invalid TOML/);
  });

  it("refuses ids and versions too long for GPT labels", () => {
    const p = problemsOf(appliance('id = "a-rather-long-name-xyz"\nversion = "2025.11.23.1234"\n'));
    expect(p).toEqual([expect.stringMatching(/^appliance.toml:2 version: id and version together are too long for a GPT partition label/)]);
  });

  it("refuses an authorized_keys file without keys", () => {
    const dir = appliance('id = "demo"\nversion = "1"\n', { authorized_keys: "# nothing\n" });
    expect(problemsOf(dir)).toEqual([expect.stringMatching(/user.authorized_keys: .* holds no public key/)]);
  });

  it("checks extra_files is a directory", () => {
    expect(problemsOf(appliance('id = "demo"\nversion = "1"\nextra_files = "files"\n'))).toEqual([
      expect.stringMatching(/^appliance.toml:3 extra_files: directory not found/),
    ]);
  });

  it("names unknown keys inside tables", () => {
    expect(problemsOf(appliance('id = "demo"\nversion = "1"\n[disk]\nslot = "1G"\n'))).toEqual(["appliance.toml:4 disk.slot: unknown key"]);
  });
});
