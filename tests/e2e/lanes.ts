// The VM suite's lanes. On a machine with cores to spare they run side by side, one vitest process
// each (scripts/e2e.ts); on 2 cores one after another, in this order. Each lane runs its scenarios
// in the order given. Scenarios that share something that cannot be shared stay in one lane; what
// two lanes may both ask for (an image, a release, the saved first boot) is made once, under a
// lock, by whichever asks first (harness/image.ts whileAlone).
import { basename, dirname } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

export const LANES: Record<string, string[]> = {
  // Every scenario that serves updates: the fixture's update.url names one host port (18480).
  // The builds of v2 and v3 come first, while the other lane boots.
  updates: ["update", "update-faults", "fleet"],
  // VM-only scenarios first (the first one saves the shared first boot); the ones that build, last,
  // while the updates lane is busy with its VMs.
  devices: ["first-boot", "factory-reset", "tampering", "storage-target", "secure-boot", "broken-guest", "readme"],
};

/** The scenario a test file belongs to: tests/e2e/scenarios/<name>/<file>.e2e.ts. */
export function scenarioOf(file: string): string | undefined {
  const dir = dirname(file);
  return basename(dirname(dir)) === "scenarios" ? basename(dir) : undefined;
}

const ORDER = Object.values(LANES).flat();

/** Runs VM scenarios in lane order; other test files as vitest would. */
export class LaneSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification) => {
      const s = scenarioOf(f.moduleId);
      const i = s === undefined ? -1 : ORDER.indexOf(s);
      return i < 0 ? ORDER.length : i;
    };
    const sorted = await super.sort(files);
    return sorted.every((f) => rank(f) === ORDER.length) ? sorted : [...sorted].sort((a, b) => rank(a) - rank(b));
  }
}
