import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import { describe, expect, it } from "vitest";
import { UserError } from "../errors.js";
import { rolloutChange, rolloutOptions } from "./options.js";
import { createProgram } from "./program.js";

/** Parses a command line with the CLI's program, every action replaced: what the command would get, or the error. */
async function parse(argv: string[]): Promise<{ args: unknown[]; error?: Error }> {
  const program = createProgram();
  let args: unknown[] = [];
  const stub = (cmd: CommandUnknownOpts) => {
    cmd.configureOutput({ writeOut: () => {}, writeErr: () => {} });
    for (const sub of cmd.commands) {
      if (!sub.commands.length)
        sub.action((...a: unknown[]) => {
          args = a.slice(0, -1);
        });
      stub(sub);
    }
  };
  stub(program);
  try {
    await program.parseAsync(argv, { from: "user" });
    return { args };
  } catch (e) {
    return { args, error: e as Error };
  }
}

const fails = async (argv: string[]) => {
  const r = await parse(argv);
  expect(r.error, argv.join(" ")).toBeInstanceOf(UserError);
  return r.error?.message;
};

describe("rollout flags, checked by the rollout schema and named by flag", () => {
  it("turns flags into the schema's fields", async () => {
    const r = await parse(["publish", "dir", "--steps", "10,50%,100", "--every", "6h", "--max-failure-rate", "0.1", "--min-devices", "5"]);
    expect(r.error).toBeUndefined();
    expect(rolloutOptions(r.args.at(-1) as never)).toEqual({ steps: [10, 50, 100], stepSeconds: 21600, maxFailureRate: 0.1, minDevices: 5 });
  });

  it("refuses what the schema refuses, in one line naming the flag", async () => {
    const refusal = async (flags: string[]) => {
      const r = await parse(["fleet", "rollout", "demo", "stable", "2.0", ...flags]);
      if (r.error) return r.error.message;
      try {
        rolloutChange(r.args.at(-1) as never);
      } catch (e) {
        return (e as Error).message;
      }
      return "accepted";
    };
    expect(await refusal(["--percent", "150"])).toBe("--percent: expected a percentage from 0 to 100");
    expect(await refusal(["--percent", "ten"])).toBe('--percent: not a number: "ten"');
    expect(await refusal(["--steps", "50,10", "--every", "1h"])).toBe("--steps: expected rising percentages above 0, e.g. 10,50,100");
    expect(await refusal(["--steps", "10,50"])).toBe("--every: a schedule needs the time between steps");
    expect(await refusal(["--every", "soon"])).toMatch(/^--every: expected seconds or a time span/);
    expect(await refusal(["--max-failure-rate", "2"])).toBe("--max-failure-rate: expected a share from 0 to 1");
    expect(await refusal(["--min-devices", "0"])).toBe("--min-devices: expected at least 1");
    expect(await refusal(["--min-devices", "1.5"])).toBe("--min-devices: expected a whole number");
    expect(await refusal(["--pause", "--resume"])).toBe("--pause and --resume exclude each other");
    expect(await refusal(["--percent", "25", "--pause"])).toBe("accepted");
  });
});

describe("identifiers on the fleet command line, read by the contract's schemas", () => {
  it("refuses a bad machine-id, image, channel or version before anything is sent", async () => {
    expect(await fails(["fleet", "device-token", "demo", "8F2C-not-hex"])).toBe(
      'machine-id "8F2C-not-hex": expected a machine-id: 32 lowercase hexadecimal digits',
    );
    expect(await fails(["fleet", "rollout", "Demo", "stable", "2.0", "--percent", "5"])).toMatch(/^image "Demo": expected lowercase letters/);
    expect(await fails(["fleet", "progress", "demo", "stable/x", "2.0"])).toMatch(/^channel "stable\/x": expected a channel name/);
    expect(await fails(["fleet", "pin", "demo", "v2_0", "--device", "0".repeat(32)])).toMatch(/^version "v2_0": expected a version/);
    expect(await fails(["fleet", "group", "demo", "lab", "0".repeat(32), "xyz"])).toMatch(/^machine-id "xyz"/);
    expect(await fails(["publish", "dir", "--channel", "a b"])).toMatch(/^--channel "a b": expected a channel name/);
  });

  it("passes good ones through", async () => {
    const m = "0123456789abcdef0123456789abcdef";
    expect((await parse(["fleet", "group", "demo", "-", m, m])).args.slice(0, 3)).toEqual(["demo", "-", [m, m]]);
    expect((await parse(["fleet", "devices", "--image", "demo", "--health", "healthy", "--limit", "5"])).args.at(-1)).toMatchObject({
      image: "demo",
      health: "healthy",
      limit: 5,
    });
  });
});

describe("vm ssh's remote command", () => {
  it("gets every word after the target, options included, with or without --", async () => {
    for (const argv of [
      ["vm", "ssh", "dir", "sudo", "systemctl", "start", "--wait", "x"],
      ["vm", "ssh", "dir", "--", "sudo", "systemctl", "start", "--wait", "x"],
    ]) {
      const r = await parse(argv);
      expect(r.error).toBeUndefined();
      expect(r.args.slice(0, 2)).toEqual(["dir", ["sudo", "systemctl", "start", "--wait", "x"]]);
    }
    // Options before the target are vm ssh's own.
    const own = await parse(["vm", "ssh", "--name", "second", "dir", "uptime", "--name", "x"]);
    expect(own.args.slice(0, 3)).toEqual(["dir", ["uptime", "--name", "x"], expect.objectContaining({ name: "second" })]);
  });
});

describe("--debug", () => {
  it("is taken before a command and after it", async () => {
    expect((await parse(["--debug", "build", "dir"])).error).toBeUndefined();
    expect((await parse(["build", "dir", "--debug"])).error).toBeUndefined();
    expect((await parse(["fleet", "status", "--debug"])).error).toBeUndefined();
  });
});
