// The README's commands, read from README.md when a test runs (never copied into a test): the
// Quick start's indented commands, the fenced `sh` blocks split into shell commands (heredocs and
// continued lines kept whole), and the Commands table. Shared by the unit test that checks them
// cheaply and the VM scenario that runs the worked example (tests/e2e/scenarios/readme).
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";

export const ROOT = join(import.meta.dirname, "../..");
export const README = join(ROOT, "README.md");

export interface ReadmeCommand {
  /** The command exactly as written (several lines for a heredoc or a continued line). */
  text: string;
  /** Its first line in README.md (1-based). */
  line: number;
  /** Short name for a step: `README.md:83 ./basalt keys init examples/minimal`, comments left out. */
  name: string;
}

const readmeLines = () => readFileSync(README, "utf8").split("\n");

/** The text of a command line without a trailing `# comment` (a # preceded by blanks, outside quotes). */
export function withoutComment(line: string): string {
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === "\\" && quote === '"') i++;
    } else if (c === "'" || c === '"') quote = c;
    else if (c === "\\") i++;
    else if (c === "#" && (i === 0 || /\s/.test(line[i - 1] ?? ""))) return line.slice(0, i).trimEnd();
  }
  return line.trimEnd();
}

function command(lines: string[], line: number): ReadmeCommand {
  const first = withoutComment(lines[0] ?? "");
  const continued = lines.length > 1 && first.endsWith("\\") ? `${first.slice(0, -1).trimEnd()} …` : first;
  return { text: lines.join("\n"), line, name: `README.md:${line} ${continued}` };
}

/** Splits a shell block into its commands: a heredoc runs to its delimiter, a line ending in \ continues. */
export function splitCommands(block: string, firstLine: number): ReadmeCommand[] {
  const lines = block.split("\n");
  const out: ReadmeCommand[] = [];
  let i = 0;
  while (i < lines.length) {
    const start = i;
    const current: string[] = [];
    for (;;) {
      const l = lines[i++] ?? "";
      current.push(l);
      const code = withoutComment(l);
      const heredoc = /<<-?\s*(['"]?)([A-Za-z_][A-Za-z0-9_]*)\1/.exec(code);
      if (heredoc) {
        while (i < lines.length && lines[i]?.trim() !== heredoc[2]) current.push(lines[i++] ?? "");
        current.push(lines[i++] ?? "");
        break;
      }
      if (!code.endsWith("\\") || i >= lines.length) break;
    }
    if (current.some((l) => withoutComment(l).trim())) out.push(command(current, firstLine + start));
  }
  return out;
}

/** The fenced ```sh blocks of the README, each split into commands. */
export function shellBlocks(): ReadmeCommand[][] {
  const lines = readmeLines();
  const blocks: ReadmeCommand[][] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== "```sh") continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && lines[end] !== "```") end++;
    blocks.push(splitCommands(lines.slice(start, end).join("\n"), start + 1));
    i = end;
  }
  return blocks;
}

/** The lines of a `## title` section (up to the next `## `), with their line numbers. */
function section(title: string): { text: string; line: number }[] {
  const lines = readmeLines();
  const at = lines.indexOf(`## ${title}`);
  if (at < 0) throw new Error(`README.md has no "## ${title}" section`);
  const out: { text: string; line: number }[] = [];
  for (let i = at + 1; i < lines.length && !lines[i]?.startsWith("## "); i++) out.push({ text: lines[i] ?? "", line: i + 1 });
  return out;
}

/** The Quick start's commands: its indented code block. */
export function quickStart(): ReadmeCommand[] {
  return section("Quick start")
    .filter((l) => l.text.startsWith("    ") && l.text.trim())
    .map((l) => command([l.text.slice(4)], l.line));
}

export interface CommandRow {
  /** `basalt vm start DIR [--ssh] [--console]`, as the first cell writes it. */
  usage: string;
  /** The subcommand path: ["vm", "start"]. */
  path: string[];
  /** Every `--flag` the row names, in either cell. */
  flags: string[];
  /** Other words in backticks in the row (subcommands such as fleet's `status`, or `basalt vm status DIR`). */
  quoted: string[];
  line: number;
}

/** The rows of the Commands table. */
export function commandRows(): CommandRow[] {
  return section("Commands")
    .filter((l) => l.text.startsWith("| `basalt"))
    .map((l) => {
      const cells = l.text.split("|").map((c) => c.trim());
      const usage = /^`([^`]+)`/.exec(cells[1] ?? "")?.[1] ?? "";
      const words = usage.split(/\s+/).slice(1);
      const path: string[] = [];
      for (const w of words) {
        if (!/^[a-z][a-z-]*$/.test(w)) break;
        path.push(w);
      }
      return {
        usage,
        path,
        flags: [...new Set(l.text.match(/--[a-z][a-z-]*/g) ?? [])],
        quoted: [...(cells[2] ?? "").matchAll(/`([^`]+)`/g)].map((m) => m[1] ?? ""),
        line: l.line,
      };
    });
}

/**
 * A shell that keeps its state (variables, exports, background jobs) from one command to the next:
 * each command runs through `eval` exactly as written, with stdin from /dev/null (a command that
 * reads stdin, such as ssh, cannot eat the next ones), and its exit status comes back with the
 * pid of the last background job. Commands arrive on fd 3, NUL-terminated.
 */
export class ShellSession {
  private output = "";
  private waiting: ((r: { code: number; lastJob: number | undefined }) => void) | undefined;
  private readonly child;
  private static readonly MARK = "\u0001basalt-readme-done";

  constructor(cwd: string, env: Record<string, string | undefined>) {
    const driver = [
      "exec 2>&1",
      "while IFS= read -r -d '' __basalt_cmd <&3; do",
      '  eval "$__basalt_cmd" < /dev/null 3<&-',
      `  printf '\\n${ShellSession.MARK} %s %s\\n' "$?" "$!"`,
      "done",
    ].join("\n");
    this.child = spawn("bash", ["--noprofile", "--norc", "-c", driver], { cwd, env, stdio: ["ignore", "pipe", "inherit", "pipe"] });
    (this.child.stdout as NodeJS.ReadableStream).on("data", (d: Buffer) => {
      this.output += d.toString("utf8");
      const m = new RegExp(`\\n${ShellSession.MARK} (\\d+) (\\d*)\\n`).exec(this.output);
      if (m && this.waiting) {
        const done = this.waiting;
        this.waiting = undefined;
        done({ code: Number(m[1]), lastJob: m[2] ? Number(m[2]) : undefined });
      }
    });
  }

  /** Runs one command; resolves with its exit status and everything the shell printed meanwhile. */
  run(text: string, timeoutMs: number): Promise<{ code: number; output: string; lastJob: number | undefined }> {
    if (this.waiting) throw new Error("a command is still running");
    this.output = "";
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`timed out after ${timeoutMs / 1000} s; output so far:\n${this.output.slice(-4000)}`));
      }, timeoutMs);
      this.waiting = (r) => {
        clearTimeout(timer);
        const output = this.output.replace(new RegExp(`\\n?${ShellSession.MARK}.*\\n[\\s\\S]*$`), "");
        resolve({ ...r, output });
      };
      (this.child.stdio[3] as NodeJS.WritableStream).write(`${text}\0`);
    });
  }

  /** Ends the shell (its background jobs are the caller's to stop). */
  close(): void {
    (this.child.stdio[3] as NodeJS.WritableStream).end();
    this.child.kill("SIGTERM");
  }
}
