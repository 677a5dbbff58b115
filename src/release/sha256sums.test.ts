import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { NOTHING_OFFERED } from "../contract/release-manifest.js";
import { parseSha256Sums, renderIndex, renderSha256Sums } from "./sha256sums.js";

const h = (c: string) => c.repeat(64);

describe("SHA256SUMS", () => {
  it("writes '<hash>  <name>' lines, sorted, each ending in LF", () => {
    const text = renderSha256Sums([
      { name: "b.efi", sha256: h("b") },
      { name: "a.raw.xz", sha256: h("a") },
    ]);
    expect(text).toBe(`${h("a")}  a.raw.xz\n${h("b")}  b.efi\n`);
    expect(parseSha256Sums(text).map((e) => e.name)).toEqual(["a.raw.xz", "b.efi"]);
  });

  it("refuses to write an empty index: systemd-pull 257 fails on a 0-byte body, though the parser would take it", () => {
    expect(() => renderSha256Sums([])).toThrow(/systemd-pull 257 fails on a 0-byte body/);
    expect(parseSha256Sums("")).toEqual([]);
    // What the server shows instead: one entry no transfer pattern matches (<id>_… patterns need a '_').
    const nothing = renderIndex([]).toString("utf8");
    expect(parseSha256Sums(nothing)).toEqual([{ name: "basalt-nothing-offered", sha256: createHash("sha256").update("").digest("hex") }]);
    expect(parseSha256Sums(nothing)).toEqual([NOTHING_OFFERED]);
    expect(nothing.length).toBeGreaterThan(0);
  });

  it("refuses names the client would reject, and duplicates", () => {
    expect(() => renderSha256Sums([{ name: "dir/x", sha256: h("a") }])).toThrow(/cannot appear/);
    expect(() => renderSha256Sums([{ name: "x\ry", sha256: h("a") }])).toThrow(/cannot appear/);
    expect(() => renderSha256Sums([{ name: "..", sha256: h("a") }])).toThrow(/cannot appear/);
    expect(() => renderSha256Sums([{ name: "x", sha256: "abc" }])).toThrow(/not a SHA-256/);
    expect(() =>
      renderSha256Sums([
        { name: "x", sha256: h("a") },
        { name: "x", sha256: h("b") },
      ]),
    ).toThrow(/twice/);
  });

  it("parses like the client: binary-mode '*', upper-case hex; rejects a missing final LF and CRLF", () => {
    expect(parseSha256Sums(`${h("A")} *x.efi\n`)).toEqual([{ name: "x.efi", sha256: h("a") }]);
    expect(() => parseSha256Sums(`${h("a")}  x.efi`)).toThrow(/truncated/);
    expect(() => parseSha256Sums(`${h("a")}  x.efi\r\n`)).toThrow(/malformed|cannot appear/);
    expect(() => parseSha256Sums(`\n`)).toThrow(/malformed/);
  });
});
