// compareVersions against systemd's own test vectors for strverscmp_improved. The tables below are data
// copied verbatim from systemd v257.13, src/test/test-string-util.c, TEST(strverscmp_improved) and
// TEST(strverscmp_improved_rpm) (lines 894-1136), read from Debian trixie's source package
// systemd_257.13-1~deb13u1 (the systemd of the tools tree). Upstream carries the same vectors at
// systemd/systemd@7208c3353220603387b5e65b808d6e62dee0d047 and systemd/systemd-stable@07ae6bf502ab16aacef90260ee29f70e7fecd20c.
// C's NULL arguments appear here as "" (strverscmp_improved reads NULL as "").
import { describe, expect, it } from "vitest";
import { compareVersions } from "./version.js";

// Each entry is newer than every one before it: STRV_FOREACH(p) STRV_FOREACH(q, p + 1) newer(*p, *q).
const ORDERED = [
  "~1",
  "",
  "ab",
  "abb",
  "abc",
  "0001",
  "002",
  "12",
  "122",
  "122.9",
  "123~rc1",
  "123",
  "123-a",
  "123-a.1",
  "123-a1",
  "123-a1.1",
  "123-3",
  "123-3.1",
  "123^patch1",
  "123^1",
  "123.a-1",
  "123.1-1",
  "123a-1",
  "124",
];
// test_strverscmp_improved_newer(older, newer) calls.
const NEWER: [older: string, newer: string][] = [
  ["123.45-67.88", "123.45-67.89"],
  ["123.45-67.89", "123.45-67.89a"],
  ["123.45-67.ab", "123.45-67.89"],
  ["123.45-67.9", "123.45-67.89"],
  ["123.45-67", "123.45-67.89"],
  ["123.45-66.89", "123.45-67.89"],
  ["123.45-9.99", "123.45-67.89"],
  ["123.42-99.99", "123.45-67.89"],
  ["123-99.99", "123.45-67.89"],
  ["123~rc1-99.99", "123.45-67.89"],
  ["123~rc1-99.99", "123-45.67.89"],
  ["123~rc1-99.99", "123~rc2-67.89"],
  ["123~rc1-99.99", "123^aa2-67.89"],
  ["123~rc1-99.99", "123aa2-67.89"],
  ["123-99.99", "123.45-67.89"],
  ["123-99.99", "123^aa2-67.89"],
  ["123-99.99", "123aa2-67.89"],
  ["123^45-67.89", "123.45-67.89"],
  ["123^aa1-99.99", "123^aa2-67.89"],
  ["123^aa2-67.89", "123aa2-67.89"],
  ["123.aa2-67.89", "123aa2-67.89"],
  ["123.aa2-67.89", "123.ab2-67.89"],
];
// assert_se(strverscmp_improved(a, b) <op> 0): the sign of the result.
const SIGNS: [a: string, b: string, sign: number][] = [
  ["123_aa2-67.89", "123aa+2-67.89", 0],
  ["123.", "123", 1],
  ["12_3", "123", -1],
  ["12_3", "12", 1],
  ["12_3", "12.3", 1],
  ["123.0", "123", 1],
  ["123_0", "123", 1],
  ["123..0", "123.0", -1],
  ["", "", 0],
  ["", "", 0],
  ["0_", "0", 0],
  ["_0_", "0", 0],
  ["_0", "0", 0],
  ["0", "0___", 0],
  ["", "_", 0],
  ["_", "", 0],
  ["_", "_", 0],
  ["", "~", 1],
  ["~", "", -1],
  ["~", "~", 0],
  ["1٠١٢٣٤٥٦٧٨٩", "1", 0],
  ["1๐๑๒๓๔๕๖๗๘๙", "1", 0],
];
// RPMVERCMP(a, b, expected): the exact result (systemd took these from rpm's tests/rpmvercmp.at).
const RPM: [a: string, b: string, expected: number][] = [
  ["1.0", "1.0", 0],
  ["1.0", "2.0", -1],
  ["2.0", "1.0", 1],
  ["2.0.1", "2.0.1", 0],
  ["2.0", "2.0.1", -1],
  ["2.0.1", "2.0", 1],
  ["2.0.1a", "2.0.1a", 0],
  ["2.0.1a", "2.0.1", 1],
  ["2.0.1", "2.0.1a", -1],
  ["5.5p1", "5.5p1", 0],
  ["5.5p1", "5.5p2", -1],
  ["5.5p2", "5.5p1", 1],
  ["5.5p10", "5.5p10", 0],
  ["5.5p1", "5.5p10", -1],
  ["5.5p10", "5.5p1", 1],
  ["10xyz", "10.1xyz", 1],
  ["10.1xyz", "10xyz", -1],
  ["xyz10", "xyz10", 0],
  ["xyz10", "xyz10.1", -1],
  ["xyz10.1", "xyz10", 1],
  ["xyz.4", "xyz.4", 0],
  ["xyz.4", "8", -1],
  ["8", "xyz.4", 1],
  ["xyz.4", "2", -1],
  ["2", "xyz.4", 1],
  ["5.5p2", "5.6p1", -1],
  ["5.6p1", "5.5p2", 1],
  ["5.6p1", "6.5p1", -1],
  ["6.5p1", "5.6p1", 1],
  ["6.0.rc1", "6.0", 1],
  ["6.0", "6.0.rc1", -1],
  ["10b2", "10a1", 1],
  ["10a2", "10b2", -1],
  ["1.0aa", "1.0aa", 0],
  ["1.0a", "1.0aa", -1],
  ["1.0aa", "1.0a", 1],
  ["10.0001", "10.0001", 0],
  ["10.0001", "10.1", 0],
  ["10.1", "10.0001", 0],
  ["10.0001", "10.0039", -1],
  ["10.0039", "10.0001", 1],
  ["4.999.9", "5.0", -1],
  ["5.0", "4.999.9", 1],
  ["20101121", "20101121", 0],
  ["20101121", "20101122", -1],
  ["20101122", "20101121", 1],
  ["2_0", "2_0", 0],
  ["2.0", "2_0", -1],
  ["2_0", "2.0", 1],
  ["a", "a", 0],
  ["a+", "a+", 0],
  ["a+", "a_", 0],
  ["a_", "a+", 0],
  ["+a", "+a", 0],
  ["+a", "_a", 0],
  ["_a", "+a", 0],
  ["+_", "+_", 0],
  ["_+", "+_", 0],
  ["_+", "_+", 0],
  ["+", "_", 0],
  ["_", "+", 0],
  ["1.0~rc1", "1.0~rc1", 0],
  ["1.0~rc1", "1.0", -1],
  ["1.0", "1.0~rc1", 1],
  ["1.0~rc1", "1.0~rc2", -1],
  ["1.0~rc2", "1.0~rc1", 1],
  ["1.0~rc1~git123", "1.0~rc1~git123", 0],
  ["1.0~rc1~git123", "1.0~rc1", -1],
  ["1.0~rc1", "1.0~rc1~git123", 1],
  ["1.0^", "1.0^", 0],
  ["1.0^", "1.0", 1],
  ["1.0", "1.0^", -1],
  ["1.0^git1", "1.0^git1", 0],
  ["1.0^git1", "1.0", 1],
  ["1.0", "1.0^git1", -1],
  ["1.0^git1", "1.0^git2", -1],
  ["1.0^git2", "1.0^git1", 1],
  ["1.0^git1", "1.01", -1],
  ["1.01", "1.0^git1", 1],
  ["1.0^20160101", "1.0^20160101", 0],
  ["1.0^20160101", "1.0.1", -1],
  ["1.0.1", "1.0^20160101", 1],
  ["1.0^20160101^git1", "1.0^20160101^git1", 0],
  ["1.0^20160102", "1.0^20160101^git1", 1],
  ["1.0^20160101^git1", "1.0^20160102", -1],
  ["1.0~rc1^git1", "1.0~rc1^git1", 0],
  ["1.0~rc1^git1", "1.0~rc1", 1],
  ["1.0~rc1", "1.0~rc1^git1", -1],
  ["1.0^git1~pre", "1.0^git1~pre", 0],
  ["1.0^git1", "1.0^git1~pre", 1],
  ["1.0^git1~pre", "1.0^git1", -1],
  ["1b.fc17", "1b.fc17", 0],
  ["1b.fc17", "1.fc17", 1],
  ["1.fc17", "1b.fc17", -1],
  ["1g.fc17", "1g.fc17", 0],
  ["1g.fc17", "1.fc17", 1],
  ["1.fc17", "1g.fc17", -1],
  ["1.1.α", "1.1.α", 0],
  ["1.1.α", "1.1.β", 0],
  ["1.1.β", "1.1.α", 0],
  ["1.1.αα", "1.1.α", 0],
  ["1.1.α", "1.1.ββ", 0],
  ["1.1.ββ", "1.1.αα", 0],
];

/** test_strverscmp_improved_newer: exactly -1 one way, positive the other, 0 against itself. */
function newerProblems(older: string, newer: string): string[] {
  const got = [compareVersions(older, newer), compareVersions(older, older), compareVersions(newer, older), compareVersions(newer, newer)];
  return got[0] === -1 && got[1] === 0 && (got[2] ?? 0) > 0 && got[3] === 0 ? [] : [`${JSON.stringify([older, newer])}: ${got.join(" ")}`];
}

describe("compareVersions, systemd's test vectors", () => {
  it("orders the list of TEST(strverscmp_improved), every pair", () => {
    const problems = ORDERED.flatMap((older, i) => ORDERED.slice(i + 1).flatMap((newer) => newerProblems(older, newer)));
    expect(problems).toEqual([]);
    expect([...ORDERED].reverse().sort(compareVersions)).toEqual(ORDERED);
  });

  it("orders the explicit older/newer pairs", () => {
    expect(NEWER.flatMap(([older, newer]) => newerProblems(older, newer))).toEqual([]);
  });

  it("gives the asserted sign for separators, ignored characters and empty strings", () => {
    const wrong = SIGNS.filter(([a, b, sign]) => Math.sign(compareVersions(a, b)) !== sign).map(([a, b, sign]) => [a, b, sign, compareVersions(a, b)]);
    expect(wrong).toEqual([]);
  });

  it("gives the exact result of the rpm-derived cases", () => {
    const wrong = RPM.filter(([a, b, expected]) => compareVersions(a, b) !== expected).map(([a, b, expected]) => [a, b, expected, compareVersions(a, b)]);
    expect(wrong).toEqual([]);
  });
});
