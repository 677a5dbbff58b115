// Version order as systemd-sysupdate 257 sees it (the UAPI version format): the server must agree with
// the device on which version is newer, or it would offer a version the device skips, or count a device
// on an older version as rolled back when it is not. Depends on nothing.

const isDigit = (c: string) => c >= "0" && c <= "9";
const isAlpha = (c: string) => (c >= "a" && c <= "z") || (c >= "A" && c <= "Z");
const isVersionChar = (c: string) => isDigit(c) || isAlpha(c) || c === "~" || c === "-" || c === "^" || c === ".";
const cmp = <T extends number | string>(x: T, y: T) => (x < y ? -1 : x > y ? 1 : 0);

/**
 * Negative when `a` is older than `b`, positive when newer, 0 when the device treats them as equal.
 * A line-by-line port of `strverscmp_improved` in systemd v257.13, src/fundamental/string-util-fundamental.c
 * (checked against systemd's own test vectors in version.test.ts and against `systemd-analyze
 * compare-versions` in tests/build/versions.test.ts). Characters outside [A-Za-z0-9~^.-] only separate
 * segments; non-ASCII characters are skipped alike whether counted as UTF-8 bytes or UTF-16 units.
 */
export function compareVersions(a: string, b: string): number {
  let i = 0;
  let j = 0;
  // "" at the end of a string, like C's NUL.
  const at = (s: string, k: number) => s[k] ?? "";
  for (;;) {
    while (i < a.length && !isVersionChar(at(a, i))) i++;
    while (j < b.length && !isVersionChar(at(b, j))) j++;
    // A '~' segment is a pre-release: older than anything else at that point, even the end of the
    // string ("~1" < ""), so there is no early return for empty strings.
    if (at(a, i) === "~" || at(b, j) === "~") {
      const r = cmp(Number(at(a, i) !== "~"), Number(at(b, j) !== "~"));
      if (r) return r;
      i++;
      j++;
    }
    // Past the '~' check, the string with more segments is newer.
    if (i >= a.length || j >= b.length) return cmp(at(a, i), at(b, j));
    // '-' (release) < '^' (patch) < '.' (point release) < no prefix, checked in this order.
    for (const sep of ["-", "^", "."]) {
      if (at(a, i) === sep || at(b, j) === sep) {
        const r = cmp(Number(at(a, i) !== sep), Number(at(b, j) !== sep));
        if (r) return r;
        i++;
        j++;
      }
    }
    let ii = i;
    let jj = j;
    if (isDigit(at(a, i)) || isDigit(at(b, j))) {
      while (isDigit(at(a, ii))) ii++;
      while (isDigit(at(b, jj))) jj++;
      // A numeric segment, even "0", is newer than none (a letter or the end): "1.0" > "1.a".
      const r = cmp(Number(ii > i), Number(jj > j));
      if (r) return r;
      while (at(a, i) === "0") i++;
      while (at(b, j) === "0") j++;
      // Numbers compare by length first (no parsing, no overflow), then digit by digit.
      const s = cmp(ii - i, jj - j) || cmp(a.slice(i, ii), b.slice(j, jj));
      if (s) return s;
    } else {
      while (isAlpha(at(a, ii))) ii++;
      while (isAlpha(at(b, jj))) jj++;
      const n = Math.min(ii - i, jj - j);
      // The common prefix first, then the longer segment is newer: "abc" > "ab".
      const r = cmp(a.slice(i, i + n), b.slice(j, j + n)) || cmp(ii - i, jj - j);
      if (r) return r;
    }
    i = ii;
    j = jj;
  }
}
