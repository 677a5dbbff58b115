import { describe, expect, it } from "vitest";
import type { RolloutProgress } from "../../fleet/fleet.js";
import { type ChartInput, chartInput, renderChartFragment, renderRolloutChart } from "./chart.js";

const T0 = Date.parse("2026-06-01T00:00:00Z");
const min = 60_000;

function input(o: Partial<ChartInput> = {}): ChartInput {
  return {
    title: "demo 2.0 on stable",
    start: T0,
    now: T0 + 30 * min,
    population: 40,
    percent: 25,
    paused: false,
    changes: [
      { at: T0, percent: 10, paused: false, actor: "op", reason: "offered on the channel" },
      { at: T0 + 10 * min, percent: 25, paused: false, actor: "op", reason: null },
    ],
    downloaded: [T0 + min, T0 + 2 * min, T0 + 11 * min, T0 + 12 * min, T0 + 13 * min],
    running: [T0 + 3 * min, T0 + 14 * min, T0 + 15 * min],
    failed: [T0 + 4 * min],
    planned: [],
    ...o,
  };
}

const attrs = (svg: string) => Object.fromEntries([...svg.matchAll(/data-([a-z]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));

describe("rollout chart", () => {
  it("carries the latest values as whole percentages of the channel's devices", () => {
    const svg = renderRolloutChart(input()).value;
    expect(attrs(svg)).toMatchObject({ offered: "25", paused: "false", downloaded: "13", running: "8", failed: "3", population: "40" });
    // One path per series, none with a NaN or infinite coordinate.
    for (const s of ["offered", "downloaded", "running", "failed"]) expect(svg).toContain(`class="series-${s}"`);
    expect(svg).not.toMatch(/NaN|Infinity/);
  });

  it("follows the data: more devices running, a higher data-running", () => {
    const before = attrs(renderRolloutChart(input()).value);
    const after = attrs(renderRolloutChart(input({ running: [...input().running, T0 + 20 * min, T0 + 21 * min] })).value);
    expect(Number(after.running)).toBeGreaterThan(Number(before.running));
    expect(after.running).toBe("13");
  });

  it("draws the offered percentage as steps at the times it changed", () => {
    const svg = renderRolloutChart(input()).value;
    const d = /class="series-offered" d="([^"]+)"/.exec(svg)?.[1] ?? "";
    // Start at 10 %, one horizontal run to the change, one vertical step up, then on to now.
    expect(d).toMatch(/^M[\d.]+,[\d.]+H[\d.]+V[\d.]+H[\d.]+$/);
    const [, , y0, , y1] = /^M([\d.]+),([\d.]+)H([\d.]+)V([\d.]+)/.exec(d)?.map(Number) ?? [];
    expect(y1).toBeLessThan(y0 as number);
  });

  it("hatches paused spans, an open one up to now", () => {
    const changes = [
      ...input().changes,
      { at: T0 + 16 * min, percent: 25, paused: true, actor: "health", reason: "paused automatically" },
      { at: T0 + 18 * min, percent: 25, paused: false, actor: "op", reason: null },
      { at: T0 + 25 * min, percent: 25, paused: true, actor: "op", reason: "again" },
    ];
    const svg = renderRolloutChart(input({ changes, paused: true })).value;
    expect(svg.match(/class="paused-span"/g)).toHaveLength(2);
    expect(attrs(svg).paused).toBe("true");
  });

  it("shows the steps a schedule has still to take, and survives an empty channel", () => {
    const planned = [
      { at: T0 + 40 * min, percent: 50 },
      { at: T0 + 50 * min, percent: 100 },
    ];
    expect(renderRolloutChart(input({ planned })).value).toContain('class="series-planned"');
    const empty = renderChartFragment(input({ population: 0, downloaded: [], running: [], failed: [], changes: [] })).value;
    expect(attrs(empty)).toMatchObject({ downloaded: "0", running: "0", failed: "0", population: "0" });
    expect(empty).not.toMatch(/NaN|Infinity/);
    expect(empty).toContain("of 0 devices on the channel");
  });

  it("counts a device that was unhealthy and then rolled back as one failure, at the first of the two", () => {
    const progress: RolloutProgress = {
      rollout: {
        image: "demo",
        channel: "stable",
        version: "2.0",
        addedAt: T0,
        percent: 20,
        paused: false,
        pauseReason: null,
        steps: [20, 50, 100],
        stepSeconds: 600,
        nextStepAt: T0 + 10 * min,
        maxFailureRate: 0.2,
        minDevices: 3,
        updatedAt: T0,
      },
      stats: { adopters: 3, running: 2, rolledBack: 1, unhealthy: 1, failures: 1 },
      changes: [],
      population: 10,
      points: [
        { kind: "downloaded", machine: "a", at: T0 + min },
        { kind: "booted", machine: "a", at: T0 + 2 * min },
        { kind: "rollback", machine: "a", at: T0 + 4 * min },
        { kind: "unhealthy", machine: "a", at: T0 + 3 * min },
      ],
    };
    const c = chartInput(progress, T0 + 5 * min);
    expect(c.failed).toEqual([T0 + 3 * min]);
    expect(c.downloaded).toEqual([T0 + min]);
    expect(c.running).toEqual([T0 + 2 * min]);
    expect(c.planned).toEqual([
      { at: T0 + 10 * min, percent: 50 },
      { at: T0 + 20 * min, percent: 100 },
    ]);
  });
});
