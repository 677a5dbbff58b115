// Options and arguments several commands share, each declared once: the server connection of
// `publish` and `fleet`, the rollout flags, and values read by the contract's schemas (the rules the
// server applies to the same values).
import { existsSync, readFileSync } from "node:fs";
import { type Command, Option, type OptionValues } from "@commander-js/extra-typings";
import type { z } from "zod";
import { type RolloutOptions, type RolloutPatch, rolloutOptionsSchema, rolloutPatch, withSchedule } from "../contract/rollout.js";
import { timespanSeconds } from "../definition/types.js";
import { parseInput, UserError } from "../errors.js";
import { tokenOf } from "../server/auth.js";

/** A command-line value read by one of the contract's schemas; a refusal names `what` and the value. */
export const parsedBy =
  <T extends z.ZodType>(schema: T, what: string) =>
  (value: string): z.output<T> =>
    parseInput(schema, value, what);

/** A number as typed (a trailing % allowed); what it may be is a schema's to say. */
const typedNumber = (flag: string) => (value: string) => {
  const n = Number(value.trim().replace(/%$/, ""));
  if (value.trim() === "" || !Number.isFinite(n)) throw new UserError(`${flag}: not a number: ${JSON.stringify(value)}`);
  return n;
};

/** Seconds, or a time span such as 30min, 6h or 1d. */
export const seconds = (flag: string) => (value: string) => {
  if (/^\d+$/.test(value)) return Number(value);
  try {
    return timespanSeconds(value);
  } catch {
    throw new UserError(`${flag}: expected seconds or a time span such as 30min, 6h or 1d, not ${JSON.stringify(value)}`);
  }
};

/** A whole number of things (0 or more). */
export const count = (flag: string) => (value: string) => {
  if (!/^\d+$/.test(value)) throw new UserError(`${flag}: expected a whole number, not ${JSON.stringify(value)}`);
  return Number(value);
};

/** A secret token: the first line of a file (never a command-line argument, which `ps` shows), or `env`. */
function readToken(file: string | undefined, env = "BASALT_TOKEN"): string | undefined {
  if (file) {
    if (!existsSync(file)) throw new UserError(`${file}: no such token file`);
    return tokenOf(readFileSync(file, "utf8"), file);
  }
  return process.env[env] || undefined;
}

/** The basalt server a command talks to and the operator token: `publish` and every `basalt fleet` command. */
export function addServerOptions<A extends unknown[], O extends OptionValues, G extends OptionValues>(cmd: Command<A, O, G>) {
  return cmd
    .addOption(new Option("--server <url>", "the basalt server's base URL").env("BASALT_SERVER"))
    .option("--token-file <file>", "file holding the operator token (or BASALT_TOKEN)");
}

/** Where the server is and the operator token for it, from the flags or BASALT_SERVER and BASALT_TOKEN. */
export function serverConnection(o: { server?: string; tokenFile?: string }): { server: string; token: string } {
  if (!o.server) throw new UserError("no server given", "pass --server URL or set BASALT_SERVER");
  const token = readToken(o.tokenFile);
  if (!token) throw new UserError("no operator token", "pass --token-file FILE or set BASALT_TOKEN");
  return { server: o.server, token };
}

/** The rollout schema's fields and the flags that set them, for messages such as `--percent: …`. */
const ROLLOUT_FLAGS = {
  percent: "--percent",
  steps: "--steps",
  stepSeconds: "--every",
  maxFailureRate: "--max-failure-rate",
  minDevices: "--min-devices",
  paused: "--pause/--resume",
} as const;

/** The rollout flags `publish`, `fleet promote` and `fleet rollout` share; converted to numbers here, checked by the rollout schema. */
export function addRolloutOptions<A extends unknown[], O extends OptionValues, G extends OptionValues>(cmd: Command<A, O, G>) {
  return cmd
    .option("--percent <n>", "share of the channel's devices to offer it to (default 100)", typedNumber("--percent"))
    .option("--steps <list>", "raise the rollout through these percentages, e.g. 10,50,100", (v) => v.split(",").map(typedNumber("--steps")))
    .option("--every <span>", "time between steps (30min, 6h, 1d)", seconds("--every"))
    .option("--max-failure-rate <r>", "pause when more than this share of devices that took it fail (0-1, default 0.2)", typedNumber("--max-failure-rate"))
    .option("--min-devices <n>", "…counted once this many devices took it (default 3)", typedNumber("--min-devices"));
}

/** The rollout flags' values, typed by their declarations above. */
type RolloutFlagValues = ReturnType<ReturnType<typeof addRolloutOptions<[], Record<never, never>, Record<never, never>>>["opts"]>;

function rolloutFields(o: RolloutFlagValues): RolloutOptions {
  return {
    ...(o.percent !== undefined ? { percent: o.percent } : {}),
    ...(o.steps !== undefined ? { steps: o.steps } : {}),
    ...(o.every !== undefined ? { stepSeconds: o.every } : {}),
    ...(o.maxFailureRate !== undefined ? { maxFailureRate: o.maxFailureRate } : {}),
    ...(o.minDevices !== undefined ? { minDevices: o.minDevices } : {}),
  };
}

const rolloutOptionsWithSchedule = withSchedule(rolloutOptionsSchema);

/** The rollout a release is offered with (publish, promote), checked by the rollout schema. */
export function rolloutOptions(o: RolloutFlagValues): RolloutOptions {
  return parseInput(rolloutOptionsWithSchedule, rolloutFields(o), "rollout", ROLLOUT_FLAGS);
}

/** A change to a rollout (fleet rollout), checked by the schema the API applies to the same change. */
export function rolloutChange(o: RolloutFlagValues & { pause?: boolean; resume?: boolean }): RolloutPatch {
  if (o.pause && o.resume) throw new UserError("--pause and --resume exclude each other");
  const patch = { ...rolloutFields(o), ...(o.pause ? { paused: true } : o.resume ? { paused: false } : {}) };
  return parseInput(rolloutPatch, patch, "rollout", ROLLOUT_FLAGS);
}
