// All terminal output goes through a Reporter: phases with timings, a live status line on a TTY,
// plain lines in CI or when piped. Library code never writes to the console itself.
import pc from "picocolors";
import yoctoSpinner, { type Spinner } from "yocto-spinner";

export interface Reporter {
  /** Starts a named phase; ends the previous one. */
  phase(name: string): void;
  /** A sub-step of the current phase (shown live on a TTY, as a line otherwise). */
  step(text: string): void;
  info(text: string): void;
  warn(text: string): void;
  /** Ends the current phase successfully. */
  done(): void;
  /** Ends the current phase as failed. */
  fail(): void;
  /** Seconds spent per finished phase, in order. */
  readonly timings: { phase: string; seconds: number }[];
}

export interface ReporterOptions {
  stream?: NodeJS.WriteStream | NodeJS.WritableStream;
  /** Live redraws; defaults to a TTY outside CI. */
  live?: boolean;
  quiet?: boolean;
}

export function createReporter(options: ReporterOptions = {}): Reporter {
  const stream = options.stream ?? process.stderr;
  const live = options.live ?? (Boolean((stream as NodeJS.WriteStream).isTTY) && !process.env.CI);
  const timings: { phase: string; seconds: number }[] = [];
  let current: { name: string; start: number } | undefined;
  let spinner: Spinner | undefined;
  const write = (line: string) => {
    if (!options.quiet) stream.write(`${line}\n`);
  };
  const end = (ok: boolean) => {
    if (!current) return;
    const seconds = (performance.now() - current.start) / 1000;
    timings.push({ phase: current.name, seconds });
    const text = `${current.name} ${pc.dim(`(${seconds.toFixed(1)} s)`)}`;
    if (spinner) {
      if (ok) spinner.success(text);
      else spinner.error(text);
      spinner = undefined;
    } else {
      write(`${ok ? pc.green("✔") : pc.red("✖")} ${text}`);
    }
    current = undefined;
  };
  return {
    timings,
    phase(name) {
      end(true);
      current = { name, start: performance.now() };
      if (live && !options.quiet) spinner = yoctoSpinner({ text: name, stream: stream as NodeJS.WriteStream }).start();
      else write(`▸ ${name}`);
    },
    step(text) {
      if (spinner && current) spinner.text = `${current.name}: ${text}`;
      else write(pc.dim(`  ${text}`));
    },
    info(text) {
      if (spinner) spinner.clear();
      write(text);
      spinner?.start();
    },
    warn(text) {
      if (spinner) spinner.clear();
      write(pc.yellow(`warning: ${text}`));
    },
    done: () => end(true),
    fail: () => end(false),
  };
}

/**
 * Runs a command's `work` with its reporter: on success the current phase ends as done; whatever
 * fails ends it through `fail()` (the live line becomes a ✖) and is thrown on, unprinted, for the
 * CLI entry (src/cli/main.ts) to print and turn into an exit code.
 */
export async function runReported<T>(reporter: Reporter, work: (reporter: Reporter) => Promise<T> | T): Promise<T> {
  try {
    const value = await work(reporter);
    reporter.done();
    return value;
  } catch (e) {
    // The command's error is what the user must see, even if the terminal went away under the reporter.
    try {
      reporter.fail();
    } catch {}
    throw e;
  }
}
