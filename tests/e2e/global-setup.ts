// Builds the shared appliance image once per run; every scenario boots its own overlay of it. The
// lanes of one run (scripts/e2e.sh) share BASALT_E2E_RUN, so the second lane reuses the first's build.
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { type BuiltImage, E2E_ROOT, prepareImage } from "./harness/image.js";

declare module "vitest" {
  export interface ProvidedContext {
    sharedImage: BuiltImage;
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const start = performance.now();
  const image = await prepareImage("shared", join(E2E_ROOT, "fixtures", "appliance"), process.env.BASALT_E2E_RUN || randomUUID());
  console.log(
    `e2e: shared image ${image.image} (${image.buildSeconds ? `built in ${image.buildSeconds.toFixed(0)} s` : "reused"}, setup ${((performance.now() - start) / 1000).toFixed(0)} s)`,
  );
  project.provide("sharedImage", image);
}
