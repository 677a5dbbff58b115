import { describe, expect, it } from "vitest";
import { debianSourcesFor, parseDeb822, parseOneLine, renderDeb822 } from "./apt-sources.js";

const HOST = `Types: deb
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://mirror.invalid/debian
Suites: bookworm
Components: main
`;

describe("apt sources", () => {
  it("keeps the host's mirrors and switches the suites to the target release", () => {
    const out = debianSourcesFor(parseDeb822(HOST), "trixie");
    expect(out).toEqual([
      {
        uri: "http://mirror.invalid/debian",
        suites: ["trixie", "trixie-updates"],
        components: ["main"],
        signedBy: "/usr/share/keyrings/debian-archive-keyring.gpg",
      },
      {
        uri: "http://mirror.invalid/debian-security",
        suites: ["trixie-security"],
        components: ["main"],
        signedBy: "/usr/share/keyrings/debian-archive-keyring.gpg",
      },
    ]);
    expect(renderDeb822(out)).toContain("Suites: trixie trixie-updates\n");
  });

  it("drops backports and sid's missing suites", () => {
    const one = parseOneLine("deb http://m.invalid/debian bookworm main\ndeb http://m.invalid/debian bookworm-backports main\n");
    expect(debianSourcesFor(one, "sid")).toEqual([
      { uri: "http://m.invalid/debian", suites: ["sid"], components: ["main"], signedBy: "/usr/share/keyrings/debian-archive-keyring.gpg" },
    ]);
  });

  it("fails clearly without a Debian archive", () => {
    expect(() => debianSourcesFor([], "trixie")).toThrow(/no Debian archive/);
  });
});
