// Version order as systemd-sysupdate 257 sees it (the UAPI version format, `strverscmp_improved`):
// the server must agree with the device on which version is newer, or it would offer a version the
// device skips, or count a device on an older version as rolled back when it is not.

const isDigit = (c: string) => c >= "0" && c <= "9";
const isAlpha = (c: string) => (c >= "a" && c <= "z") || (c >= "A" && c <= "Z");
const isVersionChar = (c: string) => isDigit(c) || isAlpha(c) || c === "~" || c === "-" || c === "^" || c === ".";
const sign = (n: number) => (n < 0 ? -1 : n > 0 ? 1 : 0);
const strcmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Negative when `a` is older than `b`, positive when newer, 0 when the device treats them as equal. */
export function compareVersions(a: string, b: string): number {
  if (!a || !b) return strcmp(a, b);
  let i = 0;
  let j = 0;
  const at = (s: string, k: number) => s[k] ?? "";
  for (;;) {
    while (i < a.length && !isVersionChar(at(a, i))) i++;
    while (j < b.length && !isVersionChar(at(b, j))) j++;
    // A '~' segment is a pre-release: older than anything else at that point.
    if (at(a, i) === "~" || at(b, j) === "~") {
      const r = sign(Number(at(a, i) !== "~") - Number(at(b, j) !== "~"));
      if (r) return r;
      i++;
      j++;
    }
    // Past the '~' check, the string with more segments is newer.
    if (i >= a.length || j >= b.length) return strcmp(a.slice(i), b.slice(j));
    for (const sep of ["-", "^", "."]) {
      if (at(a, i) === sep || at(b, j) === sep) {
        const r = sign(Number(at(a, i) !== sep) - Number(at(b, j) !== sep));
        if (r) return r;
        i++;
        j++;
      }
    }
    let ii: number;
    let jj: number;
    if (isDigit(at(a, i)) || isDigit(at(b, j))) {
      while (at(a, i) === "0") i++;
      while (at(b, j) === "0") j++;
      for (ii = i; isDigit(at(a, ii)); ii++);
      for (jj = j; isDigit(at(b, jj)); jj++);
      // Numbers compare by length first (no parsing, no overflow), then digit by digit.
      const r = sign(ii - i - (jj - j)) || strcmp(a.slice(i, ii), b.slice(j, jj));
      if (r) return r;
    } else {
      for (ii = i; isAlpha(at(a, ii)); ii++);
      for (jj = j; isAlpha(at(b, jj)); jj++);
      const n = Math.min(ii - i, jj - j);
      const r = strcmp(a.slice(i, i + n), b.slice(j, j + n)) || sign(ii - i - (jj - j));
      if (r) return r;
    }
    i = ii;
    j = jj;
  }
}
