// The README's commands, checked where that is cheap (the worked example itself boots a VM: it runs
// in the VM suite, tests/e2e/scenarios/readme). Everything is read from README.md when the test runs:
// the Quick start, each row of the Commands table (its command prints its help and knows every flag
// the row names), and the fenced sh blocks, run as written in a shell whose `./basalt` only records
// how it was called; each call must then parse with the real command line (src/cli/program.ts).
import { execFile } from "node:child_process";
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { CommanderError, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { beforeAll, describe, expect, it } from "vitest";
import { createProgram } from "../../src/cli/program.js";
import { loadAppliance } from "../../src/definition/load.js";
import { ensureLoginKey } from "../../src/keys/login-key.js";
import { commandRows, quickStart, README, ROOT, ShellSession, shellBlocks, withoutComment } from "../support/readme.js";

const cli = join(ROOT, "bin/basalt.js");
const readme = readFileSync(README, "utf8");

async function basaltHelp(path: string[]): Promise<{ code: number; out: string }> {
  try {
    const r = await promisify(execFile)(process.execPath, [cli, ...path, "--help"], { env: { ...process.env, NO_COLOR: "1" }, timeout: 60_000 });
    return { code: 0, out: r.stdout };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: `${x.stdout}${x.stderr}` };
  }
}

describe("the Quick start", () => {
  it("is the example build and `npm test`, which is scripts/test.sh, which CI runs", () => {
    const commands = quickStart().map((c) => withoutComment(c.text));
    expect(commands).toEqual(["./basalt build examples/minimal", "npm test"]);
    // npm test cannot run inside npm test: it must at least be what CI runs and what the README says it does.
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    expect(pkg.scripts.test).toBe("bash scripts/test.sh");
    expect(readFileSync(join(ROOT, ".ci/run"), "utf8").split("\n")).toContain("npm test");
    // The build command runs for real in the VM suite's readme scenario; here: the launcher it names exists.
    expect(existsSync(join(ROOT, "basalt"))).toBe(true);
    expect(existsSync(join(ROOT, "examples/minimal/appliance.toml"))).toBe(true);
  });
});

describe("the Commands table", () => {
  const rows = commandRows();
  it("lists the commands", () => {
    expect(rows.length).toBeGreaterThanOrEqual(12);
    expect(rows.map((r) => r.path.join(" "))).toEqual(expect.arrayContaining(["init", "build", "publish", "fleet", "vm start", "vm ssh", "keys init"]));
  });

  it("each command prints its help (exit 0) and knows every flag its row names", async () => {
    // A row's backticked words that are subcommands (fleet's `status`, `devices`, …) and commands it
    // names in passing (`basalt vm status DIR`) are checked too. In process, through the program the
    // CLI runs (src/cli/program.ts), which exits with the code commander gives (main.ts): starting
    // Node and tsx for each of some 30 commands would take minutes here. The binary itself below.
    const program = createProgram();
    const find = (path: string[]) => path.reduce<CommandUnknownOpts | undefined>((c, name) => c?.commands.find((x) => x.name() === name), program);
    for (const row of rows) {
      const parent = find(row.path);
      const subs = row.quoted.filter((w) => /^[a-z][a-z-]*$/.test(w) && parent?.commands.some((c) => c.name() === w)).map((w) => [...row.path, w]);
      const named = row.quoted
        .filter((q) => q.startsWith("basalt "))
        .map((q) =>
          q
            .split(/\s+/)
            .slice(1)
            .filter((w) => /^[a-z][a-z-]*$/.test(w)),
        );
      const texts: string[] = [];
      for (const path of [row.path, ...subs, ...named]) {
        const h = await helpInProcess(path);
        expect(h.code, `README.md:${row.line}: basalt ${path.join(" ")} --help exited ${h.code}: ${h.out}`).toBe(0);
        expect(h.out).toContain(`Usage: basalt ${path.join(" ")}`);
        texts.push(h.out);
      }
      for (const flag of row.flags) {
        expect(
          texts.some((t) => new RegExp(`${flag}\\b`).test(t)),
          `README.md:${row.line}: ${flag} is in no help of basalt ${row.path.join(" ")} (or the subcommands the row names)`,
        ).toBe(true);
      }
    }
  });

  it("./basalt <cmd> --help exits 0 from the command line too", async () => {
    const picks = [rows[0]?.path ?? [], ["vm", "ssh"], ["fleet", "rollout"]];
    for (const path of picks) {
      const h = await basaltHelp(path);
      expect(h.code, h.out).toBe(0);
      expect(h.out).toContain(`Usage: basalt ${path.join(" ")}`);
    }
  });
});

/** `basalt PATH --help` through the CLI's program: the exit code main.ts would give, and the text. */
async function helpInProcess(path: string[]): Promise<{ code: number; out: string }> {
  const program = createProgram();
  let out = "";
  const quiet = (cmd: CommandUnknownOpts) => {
    cmd.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) });
    for (const sub of cmd.commands) quiet(sub);
  };
  quiet(program);
  try {
    await program.parseAsync([...path, "--help"], { from: "user" });
    return { code: 0, out };
  } catch (e) {
    return { code: e instanceof CommanderError ? e.exitCode : 70, out: `${out}${e instanceof CommanderError ? "" : String(e)}` };
  }
}

describe("the README's other cheap claims", () => {
  it("names npm scripts that exist, and soak scenarios that exist", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    const scripts = [...readme.matchAll(/`npm run ([a-z0-9:]+)([^`]*)`/g)];
    expect(scripts.length).toBeGreaterThan(5);
    for (const [, name] of scripts) expect(pkg.scripts, `npm run ${name}`).toHaveProperty([name as string]);
    const soak = /`npm run test:soak -- --runs \d+ ([a-z -]+)`/.exec(readme)?.[1]?.split(" ") ?? [];
    expect(soak.length).toBeGreaterThan(0);
    for (const s of soak) expect(existsSync(join(ROOT, "tests/e2e/scenarios", s)), `scenario ${s}`).toBe(true);
  });

  it("names environment variables the code reads", () => {
    const names = [...new Set(readme.match(/\bBASALT_[A-Z0-9_]+/g) ?? [])];
    expect(names.length).toBeGreaterThan(5);
    const sources = ["src", "scripts", "tests", "bench"].flatMap((d) => filesBelow(join(ROOT, d))).map((f) => readFileSync(f, "utf8"));
    sources.push(readFileSync(join(ROOT, "scripts/test.sh"), "utf8"));
    for (const n of names)
      expect(
        sources.some((s) => s.includes(n)),
        `${n} is read nowhere`,
      ).toBe(true);
  });

  it("shows the library's entry points as the package exports them", async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    expect(readme).toContain('import { buildAppliance } from "basalt"');
    expect(Object.keys(pkg.exports)).toEqual(expect.arrayContaining([".", "./contract"]));
    const main = await import(join(ROOT, pkg.exports["."]));
    expect(typeof main.buildAppliance).toBe("function");
  });
});

function filesBelow(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? (e.name === "node_modules" ? [] : filesBelow(join(dir, e.name))) : /\.(ts|mjs|sh)$/.test(e.name) ? [join(dir, e.name)] : [],
  );
}

/** One call of the stub `./basalt`: its arguments and the environment it saw. */
interface Call {
  argv: string[];
  server: string;
  token: string;
}

describe("the README's shell blocks, as written, with a ./basalt that only records its calls", () => {
  let dir: string;
  let calls: Call[];
  const blocks = shellBlocks();
  const results: { name: string; code: number; output: string }[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "basalt-readme-dry-"));
    cpSync(join(ROOT, "examples"), join(dir, "examples"), { recursive: true, filter: (src) => !/\/(out|keys)$/.test(src) });
    const log = join(dir, ".calls");
    mkdirSync(log);
    writeFileSync(
      join(dir, "basalt"),
      [
        "#!/usr/bin/env bash",
        // One call at a time: the server the README starts in the background records its call while
        // the next commands record theirs, and two calls must not take the same number.
        `exec 9>'${log}.lock'; flock 9`,
        `n=$(ls '${log}' | wc -l)`,
        `printf '%s\\0' "\${BASALT_SERVER-}" "\${BASALT_TOKEN-}" "$@" > '${log}'/$(printf %04d "$n")`,
        // What a script reads from the real command: a report token.
        'if [[ "$1 $2" == "fleet device-token" ]]; then echo stub-report-token-0123456789; fi',
        "",
      ].join("\n"),
    );
    chmodSync(join(dir, "basalt"), 0o755);
    const shell = new ShellSession(dir, { PATH: process.env.PATH, HOME: dir, LANG: "C.UTF-8" });
    try {
      for (const c of blocks.flat()) results.push({ name: c.name, ...(await shell.run(c.text, 30_000)) });
    } finally {
      shell.close();
    }
    calls = readdirSync(log)
      .sort()
      .map((f) => {
        const [server = "", token = "", ...argv] = readFileSync(join(log, f), "utf8").split("\0").slice(0, -1);
        return { argv, server, token };
      });
  });

  it("holds the worked example", () => {
    expect(blocks.length).toBeGreaterThan(0);
    const names = blocks.flat().map((c) => c.name);
    expect(names.some((n) => n.includes("./basalt keys init examples/minimal"))).toBe(true);
    expect(names.some((n) => n.includes("./basalt vm ssh examples/minimal"))).toBe(true);
  });

  it("runs every command with exit 0 (the shell's own commands for real: the heredoc, sed, the token)", () => {
    for (const r of results) expect(r.code, `${r.name}\n${r.output}`).toBe(0);
    const toml = readFileSync(join(dir, "examples/minimal/appliance.toml"), "utf8");
    expect(toml).toMatch(/^version = "2\.0"$/m);
    expect(toml).toMatch(/^\[update\]\nurl = "http:\/\/10\.0\.2\.2:\d+\/"/m);
    expect(readFileSync(join(dir, "token"), "utf8").trim().length).toBeGreaterThanOrEqual(16);
  });

  it("leaves a definition that loads (with the login key its key set brings)", () => {
    mkdirSync(join(dir, "examples/minimal/keys"), { recursive: true, mode: 0o700 });
    ensureLoginKey(join(dir, "examples/minimal/keys/login_ed25519"), "readme");
    expect(loadAppliance(join(dir, "examples/minimal")).appliance).toMatchObject({ id: "minimal", version: "2.0" });
  });

  it("calls ./basalt only in ways the real command line accepts", async () => {
    expect(calls.length).toBeGreaterThan(10);
    for (const call of calls) {
      const parsed = await parseLikeTheCli(call);
      expect(parsed.error, `./basalt ${call.argv.join(" ")}`).toBeUndefined();
      expect(parsed.path.length, `./basalt ${call.argv.join(" ")} ran no command`).toBeGreaterThan(0);
    }
  });

  it("publishes with the server from BASALT_SERVER (no --server in the README)", async () => {
    const publishes = calls.filter((c) => c.argv[0] === "publish");
    expect(publishes.length).toBeGreaterThan(1);
    for (const call of publishes) {
      expect(call.argv).not.toContain("--server");
      const parsed = await parseLikeTheCli(call);
      expect(parsed.opts.server).toBe(call.server);
      expect(call.server).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    }
  });

  it("hands vm ssh's remote command over whole, its options too (systemctl start --wait)", async () => {
    const sshes = calls.filter((c) => c.argv[0] === "vm" && c.argv[1] === "ssh");
    expect(sshes.length).toBeGreaterThan(0);
    for (const call of sshes) {
      const parsed = await parseLikeTheCli(call);
      expect(parsed.args).toEqual([call.argv[2], call.argv.slice(3)]);
    }
    expect(sshes.some((c) => c.argv.includes("--wait"))).toBe(true);
  });
});

/**
 * Parses a call as the CLI would (src/cli/program.ts, the environment the call saw), with every
 * action replaced by one that records what it was given.
 */
async function parseLikeTheCli(call: Call): Promise<{ path: string[]; args: unknown[]; opts: Record<string, unknown>; error?: string }> {
  const program = createProgram();
  const seen: { path: string[]; args: unknown[]; opts: Record<string, unknown> } = { path: [], args: [], opts: {} };
  const visit = (cmd: CommandUnknownOpts, path: string[]) => {
    cmd.configureOutput({ writeOut: () => {}, writeErr: () => {} });
    for (const sub of cmd.commands) {
      const subPath = [...path, sub.name()];
      if (!sub.commands.length)
        sub.action((...args: unknown[]) => {
          seen.path = subPath;
          seen.args = args.slice(0, -2);
          seen.opts = args.at(-2) as Record<string, unknown>;
        });
      visit(sub, subPath);
    }
  };
  visit(program, []);
  const saved = process.env.BASALT_SERVER;
  if (call.server) process.env.BASALT_SERVER = call.server;
  else delete process.env.BASALT_SERVER;
  try {
    await program.parseAsync(call.argv, { from: "user" });
    return seen;
  } catch (e) {
    return { ...seen, error: e instanceof CommanderError ? e.message : String(e) };
  } finally {
    if (saved === undefined) delete process.env.BASALT_SERVER;
    else process.env.BASALT_SERVER = saved;
  }
}
