import { defineConfig } from "vitest/config";
import { LaneSequencer } from "./tests/e2e/lanes.js";

export default defineConfig({
  test: {
    // VM scenarios in their lane's order (tests/e2e/lanes.ts); every other file as vitest sorts it.
    sequence: { sequencer: LaneSequencer },
    projects: [
      // Generous limits: the suite must pass on a busy machine (CI may share it with an image build).
      { test: { name: "unit", include: ["src/**/*.test.ts", "tests/unit/**/*.test.ts"], testTimeout: 120_000, hookTimeout: 120_000 } },
      // Real mkosi builds: minutes the first time, then incremental.
      {
        test: {
          name: "build",
          include: ["tests/build/**/*.test.ts"],
          testTimeout: 3_600_000,
          hookTimeout: 3_600_000,
          pool: "forks",
          poolOptions: { forks: { singleFork: true } },
        },
      },
      // VM scenarios (npm run test:e2e, scripts/e2e.ts): one process per lane, each running its
      // scenarios one after another, in the lane's order.
      {
        test: {
          name: "e2e",
          include: ["tests/e2e/scenarios/**/*.e2e.ts"],
          globalSetup: ["tests/e2e/global-setup.ts"],
          testTimeout: 1_800_000,
          hookTimeout: 3_600_000,
          pool: "forks",
          poolOptions: { forks: { singleFork: true } },
        },
      },
      // The dashboard in headless Chromium (npm run test:browser): one browser at a time.
      {
        test: {
          name: "browser",
          include: ["tests/browser/**/*.browser.ts"],
          testTimeout: 120_000,
          hookTimeout: 300_000,
          pool: "forks",
          poolOptions: { forks: { singleFork: true } },
        },
      },
    ],
  },
});
