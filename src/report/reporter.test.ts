import { Writable } from "node:stream";
import { stripVTControlCharacters } from "node:util";
import { describe, expect, it } from "vitest";
import { createReporter, runReported } from "./reporter.js";

/** A stream that keeps what is written, as a TTY (with the cursor calls a spinner makes) or not. */
function fakeStream(isTTY: boolean): Writable & { text: () => string; isTTY: boolean } {
  let out = "";
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      out += chunk.toString();
      done();
    },
  });
  const cursor = (...args: unknown[]) => {
    const done = args.find((a) => typeof a === "function") as (() => void) | undefined;
    done?.();
    return true;
  };
  return Object.assign(stream, {
    isTTY,
    columns: 80,
    cursorTo: cursor,
    moveCursor: cursor,
    clearLine: cursor,
    text: () => stripVTControlCharacters(out),
  });
}

describe("runReported", () => {
  it("ends the current phase as failed and throws the error on, unprinted (plain lines)", async () => {
    const stream = fakeStream(false);
    const reporter = createReporter({ stream, live: false });
    const boom = new Error("mkosi exited with code 1");
    await expect(
      runReported(reporter, async (r) => {
        r.phase("Plan");
        r.phase("Build image (mkosi)");
        throw boom;
      }),
    ).rejects.toBe(boom);
    const lines = stream.text().trim().split("\n");
    expect(lines).toEqual([
      "▸ Plan",
      expect.stringMatching(/^✔ Plan \(\d+\.\d s\)$/),
      "▸ Build image (mkosi)",
      expect.stringMatching(/^✖ Build image \(mkosi\) \(\d+\.\d s\)$/),
    ]);
    expect(stream.text()).not.toContain("mkosi exited");
    expect(reporter.timings.map((t) => t.phase)).toEqual(["Plan", "Build image (mkosi)"]);
  });

  it("ends the live line of a TTY as failed", async () => {
    const stream = fakeStream(true);
    const reporter = createReporter({ stream, live: true });
    await expect(
      runReported(reporter, (r) => {
        r.phase("Publish");
        throw new Error("refused");
      }),
    ).rejects.toThrow("refused");
    expect(stream.text()).toMatch(/✖ Publish \(\d+\.\d s\)\n$/);
    expect(stream.text()).not.toContain("✔");
  });

  it("ends the phase as done and returns the value on success", async () => {
    const stream = fakeStream(false);
    const reporter = createReporter({ stream, live: false });
    const value = await runReported(reporter, async (r) => {
      r.phase("Release");
      return 42;
    });
    expect(value).toBe(42);
    expect(stream.text()).toMatch(/^▸ Release\n✔ Release \(\d+\.\d s\)\n$/);
  });

  it("fails nothing when the work ended its phases itself", async () => {
    const stream = fakeStream(false);
    const reporter = createReporter({ stream, live: false });
    await expect(
      runReported(reporter, async (r) => {
        r.phase("Keys");
        r.done();
        throw new Error("after the phase");
      }),
    ).rejects.toThrow("after the phase");
    expect(stream.text()).not.toContain("✖");
  });

  it("throws the command's error even when the reporter cannot end the phase", async () => {
    const reporter = {
      ...createReporter({ stream: fakeStream(false), live: false }),
      fail: () => {
        throw new Error("EPIPE");
      },
    };
    await expect(runReported(reporter, () => Promise.reject(new Error("the real problem")))).rejects.toThrow("the real problem");
  });
});
