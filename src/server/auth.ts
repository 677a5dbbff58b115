// Who may do what on the update server, and the secrets behind it. Operators: a bearer token (the
// API, scripts, the CLI) or a name and password (the dashboard, which then holds a server-side
// session: sessions.ts). Devices: a per-device report token derived from the server secret and the
// machine-id (handed to the device as a systemd credential), or one fleet-wide token. Secrets are
// compared in constant time, read only from files nobody else can read, and the server secret never
// leaves the server.
import { createHmac, randomBytes, scrypt, scryptSync, timingSafeEqual } from "node:crypto";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { UserError } from "../errors.js";

export interface Operator {
  name: string;
  /** `scrypt$N$r$p$salt$hash` (base64url parts), as `basalt fleet hash-password` prints it. */
  hash: string;
}

/** What operators and devices may present; files behind it may change while the server runs. */
export interface Credentials {
  /** Operator bearer token. */
  token?: string;
  operators: Operator[];
  /** One token every device may report with (weaker than per-device tokens: see docs/fleet.md). */
  fleetToken?: string;
}

export interface AuthOptions {
  /** 32 or more random bytes: signs cookies, derives device tokens. Share it between replicas. */
  secret: Buffer;
  /** The credentials now: a fixed set, or files re-read when they change (credentialFiles). */
  credentials: Credentials | (() => Credentials);
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

/** The text of a file holding a secret; refused when anyone but its owner may read it. */
export function readSecretFile(file: string, what: string): string {
  if (!existsSync(file)) throw new UserError(`${file}: no such ${what}`);
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) {
    throw new UserError(`${file}: the ${what} is readable by others (mode ${mode.toString(8).padStart(4, "0")})`, `run 'chmod 600 ${file}'`);
  }
  return readFileSync(file, "utf8");
}

/** Reads `name:hash` lines (blank lines and `#` comments allowed); names the line of a bad entry. */
export function parseOperators(text: string, file: string): Operator[] {
  const out: Operator[] = [];
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^([A-Za-z0-9._-]{1,64}):(scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+)$/.exec(line);
    if (!m?.[1] || !m[2]) throw new UserError(`${file}:${i + 1}: expected NAME:HASH (make the hash with 'basalt fleet hash-password')`);
    out.push({ name: m[1], hash: m[2] });
  }
  return out;
}

/** A token: the first line of a file nobody else can read (never a command-line argument, which `ps` shows). */
export function readTokenFile(file: string, what = "token file"): string {
  return tokenOf(readSecretFile(file, what), file);
}

/** The token a token file holds: its first line, at least 16 characters. */
export function tokenOf(text: string, file: string): string {
  const t = text.split("\n")[0]?.trim();
  if (!t || t.length < 16) throw new UserError(`${file}: the token must be at least 16 characters`);
  return t;
}

/** The server secret from `file`, made (0600) on first use. */
export function loadOrCreateSecret(file: string): Buffer {
  if (existsSync(file)) {
    const s = Buffer.from(readSecretFile(file, "server secret").trim(), "base64");
    if (s.length < 32) throw new UserError(`${file}: the server secret must hold at least 32 bytes (base64)`);
    return s;
  }
  const s = randomBytes(32);
  writeFileSync(file, `${s.toString("base64")}\n`, { mode: 0o600, flag: "wx" });
  return s;
}

export interface CredentialFiles {
  tokenFile?: string;
  /** The operator token when no file names it (BASALT_TOKEN). */
  token?: string;
  operatorsFile?: string;
  fleetTokenFile?: string;
  /** How often a file may be looked at for changes (default every second). */
  checkMs?: number;
}

/**
 * The credentials in files, re-read when a file changes: an operator removed from the operators
 * file, or a token replaced, is refused from the next request on (their sessions end with them).
 * A file that becomes unreadable or malformed keeps the last good credentials and reports why.
 */
export function credentialFiles(o: CredentialFiles, onError: (e: Error) => void = () => undefined): () => Credentials {
  const files = [o.tokenFile, o.operatorsFile, o.fleetTokenFile].filter((f): f is string => Boolean(f));
  const load = (): Credentials => ({
    ...(o.tokenFile ? { token: readTokenFile(o.tokenFile) } : o.token ? { token: o.token } : {}),
    operators: o.operatorsFile ? parseOperators(readSecretFile(o.operatorsFile, "operators file"), o.operatorsFile) : [],
    ...(o.fleetTokenFile ? { fleetToken: readTokenFile(o.fleetTokenFile, "fleet token file") } : {}),
  });
  const stamp = () =>
    files
      .map((f) => {
        try {
          const s = statSync(f);
          return `${s.ino}:${s.size}:${s.mtimeMs}:${s.mode}`;
        } catch {
          return "missing";
        }
      })
      .join("|");
  let current = load();
  let seen = stamp();
  let checked = Date.now();
  return () => {
    if (Date.now() - checked < (o.checkMs ?? 1000)) return current;
    checked = Date.now();
    const now = stamp();
    if (now === seen) return current;
    seen = now;
    try {
      current = load();
    } catch (e) {
      onError(e as Error);
    }
    return current;
  };
}

/** A client's address as the throttle counts it: IPv4 hosts, IPv6 /64 networks (one customer's share). */
export function addressKey(ip: string): string {
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1];
  if (v4 || isIP(ip) === 4) return v4 ?? ip;
  if (isIP(ip) !== 6) return ip;
  const [head = "", tail = ""] = ip.toLowerCase().split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = ip.includes("::") ? [...left, ...Array(8 - left.length - right.length).fill("0"), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ""))
    .join(":")}::/64`;
}

/**
 * Failures counted per key, in two bounded tiers: keys still allowed to try, of which the least
 * recently failing are forgotten first, and keys being slowed down, kept apart so that no flood of
 * new keys (addresses) can push them out.
 */
export class FailureCounter {
  private readonly trying = new Map<string, { count: number; last: number }>();
  private readonly slowed = new Map<string, { count: number; last: number }>();
  constructor(
    private readonly max: number,
    /** Failures before the key is slowed down. */
    private readonly threshold = 5,
  ) {}

  /** Milliseconds until `key` may try again (a second from the threshold on, doubling, at most a minute). */
  wait(key: string, now: number): number {
    const f = this.slowed.get(key);
    if (!f) return 0;
    return Math.max(0, f.last + Math.min(60_000, 1000 * 2 ** (f.count - this.threshold)) - now);
  }

  fail(key: string, now: number): void {
    const f = this.slowed.get(key) ?? this.trying.get(key);
    this.trying.delete(key);
    this.slowed.delete(key);
    const next = { count: (f?.count ?? 0) + 1, last: now };
    const tier = next.count >= this.threshold ? this.slowed : this.trying;
    tier.set(key, next);
    if (tier.size > this.max) tier.delete(tier.keys().next().value as string);
  }

  clear(key: string): void {
    this.trying.delete(key);
    this.slowed.delete(key);
  }
}

export type SignIn =
  | { ok: true; operator: string; credential: string }
  | { ok: false; reason: "wrong" }
  | { ok: false; reason: "throttled" | "busy"; retryAfterSeconds: number };

/** scrypt runs at most this many at once; more sign-ins wait their turn or are turned away. */
const SCRYPT_CONCURRENCY = 2;
const SCRYPT_QUEUE = 16;

export class Auth {
  readonly secret: Buffer;
  private readonly credentials: () => Credentials;
  private dummy?: string;
  private readonly byAddress = new FailureCounter(100_000);
  // Per operator, against guessing spread over many addresses; later than per address, so that one
  // client failing cannot keep an operator out.
  private readonly byOperator = new FailureCounter(10_000, 20);
  private running = 0;
  private readonly queue: (() => void)[] = [];

  constructor(o: AuthOptions) {
    if (o.secret.length < 32) throw new Error("the server secret is too short");
    this.secret = o.secret;
    const c = o.credentials;
    this.credentials = typeof c === "function" ? c : () => c;
  }

  /** True when anyone can sign in at all. */
  get enabled(): boolean {
    const c = this.credentials();
    return Boolean(c.token || c.operators.length);
  }

  /** The operator a bearer token stands for, `false` for a bearer that is wrong, undefined for none. */
  bearer(header: string | undefined): string | false | undefined {
    if (header === undefined) return undefined;
    const m = /^Bearer (.+)$/.exec(header);
    const { token } = this.credentials();
    return Boolean(token && m?.[1] && sameSecret(m[1], token)) && "token";
  }

  /**
   * A fingerprint of the credential a session was opened with, if that credential is still valid:
   * a session lives only as long as its operator's entry (and password) or the token it used.
   */
  credential(operator: string, via: "password" | "token"): string | undefined {
    const c = this.credentials();
    if (via === "token") return c.token ? `token:${b64u(hmac(this.secret, "session-token", c.token))}` : undefined;
    const op = c.operators.find((x) => x.name === operator);
    return op ? `password:${b64u(hmac(this.secret, "session-operator", op.name, op.hash))}` : undefined;
  }

  /**
   * Checks a dashboard sign-in: a name and password, or the operator token as the password (then the
   * session names the operator "<name> (token)": the name is only what the token holder typed).
   * Failures slow down the address they come from and the operator they name; a throttled attempt
   * costs no scrypt at all.
   */
  async signIn(name: string, password: string, peer: string, now = Date.now()): Promise<SignIn> {
    const address = addressKey(peer);
    const c = this.credentials();
    const op = c.operators.find((x) => x.name === name);
    // Only names that exist are counted: made-up names cannot crowd out real ones.
    const wait = Math.max(this.byAddress.wait(address, now), op ? this.byOperator.wait(op.name, now) : 0);
    if (wait > 0) return { ok: false, reason: "throttled", retryAfterSeconds: Math.ceil(wait / 1000) };
    if (c.token && sameSecret(password, c.token)) {
      this.byAddress.clear(address);
      const label = name.trim() ? `${name.trim().slice(0, 64)} (token)` : "token";
      return { ok: true, operator: label, credential: this.credential(label, "token") as string };
    }
    if (!(await this.slot())) return { ok: false, reason: "busy", retryAfterSeconds: 1 };
    let ok: boolean;
    try {
      // Always hash once, so a wrong name takes as long as a wrong password.
      this.dummy ??= hashPassword(randomBytes(16).toString("hex"));
      ok = await verifyPassword(password, op?.hash ?? this.dummy);
    } finally {
      this.release();
    }
    if (op && ok) {
      this.byAddress.clear(address);
      this.byOperator.clear(op.name);
      return { ok: true, operator: op.name, credential: this.credential(op.name, "password") as string };
    }
    this.byAddress.fail(address, now);
    if (op) this.byOperator.fail(op.name, now);
    return { ok: false, reason: "wrong" };
  }

  private slot(): Promise<boolean> {
    if (this.running < SCRYPT_CONCURRENCY) {
      this.running++;
      return Promise.resolve(true);
    }
    if (this.queue.length >= SCRYPT_QUEUE) return Promise.resolve(false);
    return new Promise((resolve) => this.queue.push(() => resolve(true)));
  }

  private release(): void {
    const next = this.queue.shift();
    if (next) next();
    else this.running--;
  }

  /** Whether a report for `image`/`machine` carries a token that device may use. */
  device(header: string | undefined, image: string, machine: string): boolean {
    const m = /^Bearer (.+)$/.exec(header ?? "");
    if (!m?.[1]) return false;
    if (sameSecret(m[1], deviceToken(this.secret, image, machine))) return true;
    const { fleetToken } = this.credentials();
    return Boolean(fleetToken) && sameSecret(m[1], fleetToken ?? "");
  }

  /** A key derived from the server secret for one purpose (cookie signatures, CSRF tokens). */
  key(purpose: string): Buffer {
    return hmac(this.secret, "basalt-key", purpose);
  }
}
