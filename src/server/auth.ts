// Who may do what on the update server. Operators: a bearer token (the API, scripts, the CLI) or a
// name and password (the dashboard, which then holds a signed session cookie and a CSRF token).
// Devices: a per-device report token derived from the server secret and the machine-id (handed to
// the device as a systemd credential), or one fleet-wide token. Everything secret is compared in
// constant time, and the server secret never leaves the server.
import { createHmac, randomBytes, scrypt, scryptSync, timingSafeEqual } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { UserError } from "../errors.js";

export interface Operator {
  name: string;
  /** `scrypt$N$r$p$salt$hash` (base64url parts), as `basalt fleet hash-password` prints it. */
  hash: string;
}

export interface AuthOptions {
  /** 32 or more random bytes: signs sessions and CSRF tokens, derives device tokens. Share it between replicas. */
  secret: Buffer;
  /** Operator bearer token. */
  token?: string;
  operators?: Operator[];
  /** One token every device may report with (weaker than per-device tokens: see docs/fleet.md). */
  fleetToken?: string;
  /** Seconds a dashboard session lasts. */
  sessionSeconds?: number;
}

const b64u = (b: Buffer) => b.toString("base64url");
const hmac = (secret: Buffer, ...parts: string[]) => createHmac("sha256", secret).update(parts.join("\0")).digest();

export function sameSecret(a: string | Buffer, b: string | Buffer): boolean {
  const x = Buffer.isBuffer(a) ? a : Buffer.from(a);
  const y = Buffer.isBuffer(b) ? b : Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The token a device reports with; the server recomputes it, so it stores none. */
export function deviceToken(secret: Buffer, image: string, machine: string): string {
  return b64u(hmac(secret, "basalt-device-token", image, machine));
}

const SCRYPT = { N: 1 << 15, r: 8, p: 1 };

export function hashPassword(password: string): string {
  if (password.length < 8) throw new UserError("a password needs at least 8 characters");
  const salt = randomBytes(16);
  const hash = scryptSync(password, salt, 32, { ...SCRYPT, maxmem: 64 << 20 });
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${b64u(salt)}$${b64u(hash)}`;
}

/** Checks a password against its hash off the event loop (scrypt takes tens of milliseconds on purpose). */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [kind, n, r, p, salt, hash] = stored.split("$");
  if (kind !== "scrypt" || !salt || !hash) return false;
  const expected = Buffer.from(hash, "base64url");
  const got = await new Promise<Buffer>((resolve, reject) =>
    scrypt(password, Buffer.from(salt, "base64url"), expected.length, { N: Number(n), r: Number(r), p: Number(p), maxmem: 256 << 20 }, (e, key) =>
      e ? reject(e) : resolve(key),
    ),
  );
  return sameSecret(got, expected);
}

/** Reads `name:hash` lines (blank lines and `#` comments allowed); names the line of a bad entry. */
export function loadOperators(file: string): Operator[] {
  if (!existsSync(file)) throw new UserError(`${file}: no such operators file`);
  const out: Operator[] = [];
  for (const [i, raw] of readFileSync(file, "utf8").split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^([A-Za-z0-9._-]{1,64}):(scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+)$/.exec(line);
    if (!m?.[1] || !m[2]) throw new UserError(`${file}:${i + 1}: expected NAME:HASH (make the hash with 'basalt fleet hash-password')`);
    out.push({ name: m[1], hash: m[2] });
  }
  return out;
}

/** The server secret from `file`, made (0600) on first use. */
export function loadOrCreateSecret(file: string): Buffer {
  if (existsSync(file)) {
    const s = Buffer.from(readFileSync(file, "utf8").trim(), "base64");
    if (s.length < 32) throw new UserError(`${file}: the server secret must hold at least 32 bytes (base64)`);
    return s;
  }
  const s = randomBytes(32);
  writeFileSync(file, `${s.toString("base64")}\n`, { mode: 0o600, flag: "wx" });
  return s;
}

export class Auth {
  readonly secret: Buffer;
  private readonly sessionMs: number;
  private dummy?: string;
  private readonly failures = new Map<string, { count: number; last: number }>();

  constructor(private readonly o: AuthOptions) {
    if (o.secret.length < 32) throw new Error("the server secret is too short");
    this.secret = o.secret;
    this.sessionMs = (o.sessionSeconds ?? 12 * 3600) * 1000;
  }

  /** True when anyone can sign in at all. */
  get enabled(): boolean {
    return Boolean(this.o.token || this.o.operators?.length);
  }

  /** The operator a bearer token stands for. */
  bearer(header: string | undefined): string | undefined {
    const m = /^Bearer (.+)$/.exec(header ?? "");
    if (!this.o.token || !m?.[1]) return undefined;
    return sameSecret(m[1], this.o.token) ? "token" : undefined;
  }

  /**
   * Checks a dashboard sign-in: a name and password, or the operator token as the password (then the
   * audit log says so: the name is only what the token holder typed). Failures from one address are
   * slowed down, so guessing costs time and cannot flood the server with scrypt work.
   */
  async signIn(name: string, password: string, from = "?"): Promise<string | undefined> {
    const now = Date.now();
    const f = this.failures.get(from);
    if (f && f.count >= 5 && now - f.last < Math.min(60_000, 1000 * 2 ** (f.count - 5))) return undefined;
    let who: string | undefined;
    if (this.o.token && sameSecret(password, this.o.token)) who = name.trim() ? `${name.trim()} (token)` : "token";
    else {
      const op = this.o.operators?.find((x) => x.name === name);
      // Always hash once, so a wrong name takes as long as a wrong password.
      this.dummy ??= hashPassword(randomBytes(16).toString("hex"));
      const ok = await verifyPassword(password, op?.hash ?? this.dummy);
      who = op && ok ? op.name : undefined;
    }
    if (who) this.failures.delete(from);
    else {
      this.failures.set(from, { count: (f?.count ?? 0) + 1, last: now });
      if (this.failures.size > 10_000) this.failures.clear();
    }
    return who;
  }

  createSession(name: string, now = Date.now()): string {
    const body = b64u(Buffer.from(JSON.stringify({ sub: name, exp: now + this.sessionMs })));
    return `${body}.${b64u(hmac(this.secret, "session", body))}`;
  }

  /** The operator a session cookie belongs to, while it is valid. */
  session(cookie: string | undefined, now = Date.now()): string | undefined {
    const [body, mac] = (cookie ?? "").split(".");
    if (!body || !mac || !sameSecret(mac, b64u(hmac(this.secret, "session", body)))) return undefined;
    try {
      const { sub, exp } = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as { sub?: string; exp?: number };
      return typeof sub === "string" && typeof exp === "number" && exp > now ? sub : undefined;
    } catch {
      return undefined;
    }
  }

  /** The CSRF token that goes with a session: forms and scripts must send it back on every change. */
  csrf(cookie: string): string {
    return b64u(hmac(this.secret, "csrf", cookie)).slice(0, 32);
  }

  checkCsrf(cookie: string, token: string | undefined): boolean {
    return Boolean(token) && sameSecret(this.csrf(cookie), token ?? "");
  }

  /** Whether a report for `image`/`machine` carries a token that device may use. */
  device(header: string | undefined, image: string, machine: string): boolean {
    const m = /^Bearer (.+)$/.exec(header ?? "");
    if (!m?.[1]) return false;
    if (sameSecret(m[1], deviceToken(this.secret, image, machine))) return true;
    return Boolean(this.o.fleetToken) && sameSecret(m[1], this.o.fleetToken ?? "");
  }
}
