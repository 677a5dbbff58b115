// compareVersions against systemd itself: the tools tree's `systemd-analyze compare-versions` (systemd 257,
// the same strverscmp_improved that systemd-sysupdate uses on the device) on a generated set of pairs.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compareVersions } from "../../src/contract/version.js";
import { createReporter } from "../../src/report/reporter.js";
import { ensureMkosi, type MkosiTool } from "../../src/toolchain/mkosi.js";
import { runTool } from "../../src/toolchain/tools-run.js";
import { ensureToolsTree } from "../../src/toolchain/tools-tree.js";

type Pair = [a: string, b: string];

// Hand-picked: empty strings and segments, '~' against the end of the string, runs of zeros against
// letters and the end, numbers past 2^64, case, characters systemd ignores, non-ASCII.
const ADVERSARIAL: Pair[] = [
  ["", ""],
  ["", "~"],
  ["", "_"],
  ["~", "~~"],
  ["~1", ""],
  ["~~1", "~1"],
  ["0", ""],
  ["00", "0"],
  ["0", "a"],
  ["00", "a"],
  ["a0", "a"],
  ["1.0", "1.a"],
  ["1.00", "1.a"],
  ["1.0", "1"],
  ["1..0", "1.0"],
  ["1.0", "1.00"],
  ["01", "1"],
  ["1-", "1"],
  ["1^", "1"],
  ["1~", "1"],
  ["1.", "1"],
  ["1-~", "1"],
  ["1^~", "1^"],
  ["-1", "1"],
  ["--1", "-1"],
  ["1-.1", "1.-1"],
  ["1^-1", "1-^1"],
  ["1a", "1.a"],
  ["1a", "1^a"],
  ["a", "A"],
  ["Z", "a"],
  ["abc", "abcd"],
  ["abc1", "abcd"],
  ["18446744073709551616", "18446744073709551615"],
  ["99999999999999999999999999999999999999", "100000000000000000000000000000000000000"],
  ["000000000000000000000000000000000000001", "1"],
  ["1_2", "1.2"],
  ["1+2", "1,2"],
  ["_", "~"],
  ["1α", "1"],
  ["1.α", "1."],
  ["257.13-1~deb13u1", "257.13-1"],
  ["257.13-1~deb13u1", "257.9-1"],
  ["2025.11.3", "2025.11.03"],
  ["1.0~rc1^git1", "1.0~rc1"],
];

// Pieces that reach every branch of strverscmp_improved. A version is up to six of them; most pairs
// pair a version with a copy changed in one place, so that they get past their first segment.
const TOKENS = [
  ...["0", "00", "007", "1", "2", "9", "10", "12", "123", "0001", "18446744073709551616", "99999999999999999999999"],
  ...["a", "b", "z", "A", "Z", "rc", "git", "ab", "abc"],
  ...["~", "^", "-", ".", ".", "..", "-.", "~~"],
  // Characters systemd skips, and nothing at all.
  ...["_", "+", ",", ""],
];

/** mulberry32: a seeded generator, so a failure reproduces. */
function createRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function generatePairs(seed: number): Pair[] {
  const random = createRandom(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
  const tokens = () => Array.from({ length: Math.floor(random() * 7) }, () => pick(TOKENS));
  // One change to a version as tokens: another token, one more, one less, or one more '0'.
  const mutate = (ts: string[]) => {
    const out = [...ts];
    const k = Math.floor(random() * (out.length + 1));
    const op = Math.floor(random() * 4);
    if (op === 0 && k < out.length) out[k] = pick(TOKENS);
    else if (op === 1) out.splice(k, 0, pick(TOKENS));
    else if (op === 2 && k < out.length) out.splice(k, 1);
    else out.splice(k, 0, "0");
    return out;
  };
  const pairs: Pair[] = [];
  for (let n = 0; n < 100; n++) pairs.push([tokens().join(""), tokens().join("")]);
  for (let n = 0; n < 180; n++) {
    const ts = tokens();
    pairs.push([ts.join(""), mutate(ts).join("")]);
  }
  for (let n = 0; n < 30; n++) {
    const ts = tokens();
    pairs.push([ts.join(""), mutate(mutate(ts)).join("")]);
  }
  return pairs;
}

const reporter = createReporter({ live: false, quiet: true });
let mkosi: MkosiTool;
let tools: string;
let scratch: string;

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), "basalt-versions-"));
  mkosi = (await ensureMkosi(reporter)) as MkosiTool;
  tools = await ensureToolsTree(mkosi, reporter, { logFile: join(scratch, "tools-tree.log") });
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/**
 * `systemd-analyze compare-versions A B` for every pair in one sandbox start (a start costs about two
 * seconds): exit 0 for A == B, 11 for A > B, 12 for A < B (systemd-analyze(1), the rpmdev-vercmp
 * convention); it prints `A < B`, with '' for an empty string. `--` keeps a version such as "-1" from
 * being read as an option; warnings about ignored characters go to stderr. No `$(...)` around it: a
 * subshell per pair costs as much as half a systemd-analyze under load, so its line goes straight to
 * stdout and a line `= <exit code>` follows it.
 */
async function systemdOrder(pairs: Pair[]): Promise<{ code: number; line: string }[]> {
  const script = 'while [ $# -ge 2 ]; do systemd-analyze compare-versions -- "$1" "$2" 2>/dev/null; echo "= $?"; shift 2; done';
  const out = await runTool(mkosi, tools, ["sh", "-c", script, "sh", ...pairs.flat()]);
  const results: { code: number; line: string }[] = [];
  let printed: string[] = [];
  for (const l of out.stdout.split("\n")) {
    const code = /^= (\d+)$/.exec(l)?.[1];
    if (code === undefined) printed.push(l);
    else {
      results.push({ code: Number(code), line: printed.join("\n") });
      printed = [];
    }
  }
  return results;
}

const EXIT_TO_SIGN: Record<number, number> = { 0: 0, 11: 1, 12: -1 };
const SIGN_TO_OPERATOR: Record<number, string> = { 0: "==", 1: ">", [-1]: "<" };

describe("compareVersions against systemd-analyze compare-versions (systemd 257)", () => {
  it("agrees on every hand-picked and generated pair", async () => {
    const pairs = [...ADVERSARIAL, ...generatePairs(257)];
    const start = performance.now();
    const results = await systemdOrder(pairs);
    console.log(`${pairs.length} pairs through systemd-analyze: ${((performance.now() - start) / 1000).toFixed(1)} s`);
    expect(results).toHaveLength(pairs.length);
    const disagreements = pairs.flatMap(([a, b], k) => {
      const r = results[k];
      const systemd = EXIT_TO_SIGN[r?.code ?? -1];
      const ours = Math.sign(compareVersions(a, b));
      // The printed line must say the same as the exit code, or the parsing above is wrong.
      const shown = (v: string) => (v === "" ? "''" : v);
      const lineAgrees = r?.line === `${shown(a)} ${SIGN_TO_OPERATOR[systemd ?? 2]} ${shown(b)}`;
      return systemd === ours && lineAgrees ? [] : [{ a, b, systemd: r, ours }];
    });
    expect(disagreements).toEqual([]);
    // The set must be worth running: it reaches all three outcomes.
    const signs = new Set(results.map((r) => r.code));
    expect([...signs].sort()).toEqual([0, 11, 12]);
  });
});
