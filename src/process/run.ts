// The one way Basalt starts external tools (mkosi, apt-get, dpkg-deb, systemd tools): argument
// arrays, never shell strings; output captured, streamed line by line, or appended to a log file.
import { spawn } from "node:child_process";
import { closeSync, createWriteStream, openSync, type WriteStream } from "node:fs";
import { ToolError } from "../errors.js";

export interface RunOptions {
  cwd?: string;
  /** Added to a cleaned copy of the environment. */
  env?: Record<string, string | undefined>;
  /** Text written to the child's stdin. */
  input?: string | Buffer;
  /** Every output line (stdout and stderr) is appended here. */
  logFile?: string;
  /** Called with each output line as it arrives. */
  onLine?: (line: string) => void;
  /** Keep stdout in memory (default true unless logFile is set). */
  capture?: boolean;
  /** Throw ToolError on a non-zero exit (default true). */
  check?: boolean;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  notFound: boolean;
  stdout: string;
  stderr: string;
}

// Variables that make child tools behave differently from run to run or leak a caller's state.
const DROPPED_ENV = ["PAGER", "MKOSI_DEBUG", "SYSTEMD_PAGER", "LESS", "GIT_DIR"];

function childEnv(extra: Record<string, string | undefined> | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: "C.UTF-8", SYSTEMD_PAGER: "cat" };
  for (const k of DROPPED_ENV) delete env[k];
  env.SYSTEMD_PAGER = "cat";
  for (const [k, v] of Object.entries(extra ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

const TAIL_LINES = 40;

export async function run(command: string[], options: RunOptions = {}): Promise<RunResult> {
  const [bin, ...args] = command;
  if (!bin) throw new Error("run: empty command");
  const capture = options.capture ?? options.logFile === undefined;
  let log: WriteStream | undefined;
  if (options.logFile) {
    log = createWriteStream(options.logFile, { flags: "a", mode: 0o644 });
    log.write(`$ ${command.join(" ")}\n`);
  }
  const child = spawn(bin, args, {
    cwd: options.cwd,
    env: childEnv(options.env),
    stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  const out: string[] = [];
  const err: string[] = [];
  const tail: string[] = [];
  const attach = (stream: NodeJS.ReadableStream | null, sink: string[], keep: boolean) => {
    if (!stream) return;
    let partial = "";
    stream.on("data", (chunk: Buffer) => {
      const lines = (partial + chunk.toString("utf8")).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) emit(line, sink, keep);
    });
    stream.on("end", () => {
      if (partial) emit(partial, sink, keep);
    });
  };
  const emit = (line: string, sink: string[], keep: boolean) => {
    if (keep) sink.push(line);
    log?.write(`${line}\n`);
    tail.push(line);
    if (tail.length > TAIL_LINES) tail.shift();
    options.onLine?.(line);
  };
  attach(child.stdout, out, capture);
  attach(child.stderr, err, true);
  if (options.input !== undefined && child.stdin) {
    child.stdin.end(options.input);
  }
  const result = await new Promise<RunResult>((resolve) => {
    let notFound = false;
    child.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") notFound = true;
      resolve({ code: 127, signal: null, notFound, stdout: "", stderr: String(e.message) });
    });
    child.on("close", (code, signal) => {
      resolve({ code, signal, notFound, stdout: out.join("\n"), stderr: err.join("\n") });
    });
  });
  if (log) await new Promise<void>((r) => log.end(r));
  if ((options.check ?? true) && (result.code !== 0 || result.signal)) {
    throw new ToolError(command, result, options.logFile, tail.join("\n"));
  }
  return result;
}

/** Runs a command and returns its trimmed stdout. */
export async function output(command: string[], options: Omit<RunOptions, "capture"> = {}): Promise<string> {
  return (await run(command, { ...options, capture: true })).stdout.trim();
}

/** A long-running child (qemu, swtpm) in its own process group, its output appended to a file. */
export interface Daemon {
  pid: number;
  /** Resolves with the exit code (or null when killed) once the process has gone. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Signals the whole process group (the tools run behind mkosi's sandbox launcher). */
  kill(signal?: NodeJS.Signals): void;
}

export interface DaemonOptions {
  logFile: string;
  env?: Record<string, string | undefined>;
  /** Keep running after this process exits (basalt vm start --detach). */
  detach?: boolean;
}

export function spawnDaemon(command: string[], options: DaemonOptions): Daemon {
  const [bin, ...args] = command;
  if (!bin) throw new Error("spawnDaemon: empty command");
  const fd = openSync(options.logFile, "a", 0o644);
  const child = spawn(bin, args, { env: childEnv(options.env), stdio: ["ignore", fd, fd], detached: true });
  closeSync(fd);
  if (child.pid === undefined) throw new ToolError(command, { code: 127, signal: null, notFound: true });
  const pid = child.pid;
  if (options.detach) child.unref();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", (code, signal) => resolve({ code, signal }));
    child.on("error", () => resolve({ code: 127, signal: null }));
  });
  return { pid, exited, kill: (signal = "SIGTERM") => killGroup(pid, signal) };
}

/** Signals a process group; a group that has already gone is not an error. */
export function killGroup(pid: number, signal: NodeJS.Signals = "SIGTERM"): void {
  try {
    process.kill(-pid, signal);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ESRCH") throw e;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Runs a command attached to this terminal (an interactive ssh session); returns its exit code. */
export async function runInteractive(command: string[], options: { env?: Record<string, string | undefined> } = {}): Promise<number> {
  const [bin, ...args] = command;
  if (!bin) throw new Error("runInteractive: empty command");
  const child = spawn(bin, args, { env: childEnv(options.env), stdio: "inherit" });
  return new Promise((resolve) => {
    child.on("error", () => resolve(127));
    child.on("close", (code) => resolve(code ?? 1));
  });
}
