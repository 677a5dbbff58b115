import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { expect, it } from "vitest";
import { withLock } from "./lock.js";

it("runs holders of one lock one after the other, tells the waiter, and frees the lock after a failure", async () => {
  const path = join(mkdtempSync(join(tmpdir(), "basalt-lock-")), "sub", "build");
  const events: string[] = [];
  let waited = 0;
  const holder = (name: string, ms: number, fail = false) =>
    withLock(
      path,
      async () => {
        events.push(`${name} in`);
        await sleep(ms);
        events.push(`${name} out`);
        if (fail) throw new Error(`${name} failed`);
        return name;
      },
      { onWait: () => waited++ },
    );
  const first = holder("a", 400, true);
  await sleep(50);
  const second = holder("b", 10);
  await expect(first).rejects.toThrow("a failed");
  await expect(second).resolves.toBe("b");
  expect(events).toEqual(["a in", "a out", "b in", "b out"]);
  expect(waited).toBe(1);
  expect(existsSync(`${path}.lock`)).toBe(false);
});
