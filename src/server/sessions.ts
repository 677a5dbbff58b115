// Dashboard sessions, kept in the fleet database so that every replica sees a sign-out at once.
// The browser holds a random id in a signed, HttpOnly, SameSite=Strict cookie (Secure over HTTPS);
// the database holds only its hash. A session ends when its operator signs out, signs out
// everywhere, is removed from the operators file (or changes password), when the token it was
// opened with is replaced, or after `sessionSeconds`.
import { createHash, randomBytes } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { SessionRecord } from "../fleet/db/fleet-db.js";
import type { Fleet } from "../fleet/fleet.js";
import type { Auth } from "./auth.js";

export const SESSION_COOKIE = "basalt_session";

const hashId = (id: string) => createHash("sha256").update(id).digest("base64url");

export class Sessions {
  private readonly ms: number;
  private lastSweep = 0;

  constructor(
    private readonly fleet: Fleet,
    private readonly auth: Auth,
    sessionSeconds = 12 * 3600,
  ) {
    this.ms = sessionSeconds * 1000;
  }

  private get db() {
    return this.fleet.db;
  }

  private now(): number {
    return this.fleet.now();
  }

  /** Opens a session for a signed-in operator and sets its cookie; any session the browser had ends. */
  async open(req: FastifyRequest, reply: FastifyReply, operator: string, credential: string): Promise<SessionRecord> {
    await this.close(req, reply, false);
    const id = randomBytes(32).toString("base64url");
    const at = this.now();
    const record: SessionRecord = { idHash: hashId(id), operator, credential, createdAt: at, expiresAt: at + this.ms, peer: req.ip };
    await this.db.putSession(record);
    reply.setCookie(SESSION_COOKIE, id, { path: "/", httpOnly: true, sameSite: "strict", secure: "auto", signed: true, maxAge: this.ms / 1000 });
    await this.fleet.record(operator, "sign-in", { via: "dashboard", peer: req.ip });
    await this.sweep(at);
    return record;
  }

  /** The live session the request's cookie names, if any. */
  async find(req: FastifyRequest): Promise<SessionRecord | undefined> {
    const raw = req.cookies[SESSION_COOKIE];
    if (!raw) return undefined;
    const { valid, value } = req.unsignCookie(raw);
    if (!valid || !value) return undefined;
    const s = await this.db.session(hashId(value));
    if (!s) return undefined;
    const via = s.credential.startsWith("token:") ? "token" : "password";
    if (s.expiresAt <= this.now() || this.auth.credential(s.operator, via) !== s.credential) {
      await this.db.deleteSession(s.idHash);
      return undefined;
    }
    return s;
  }

  /** Signs the browser out: its session ends on every replica. */
  async close(req: FastifyRequest, reply: FastifyReply, audit = true): Promise<void> {
    const s = await this.find(req);
    if (s) {
      await this.db.deleteSession(s.idHash);
      if (audit) await this.fleet.record(s.operator, "sign-out", { via: "dashboard" });
    }
    if (req.cookies[SESSION_COOKIE]) reply.clearCookie(SESSION_COOKIE, { path: "/" });
  }

  /** Ends every session of `operator` ("sign out everywhere"), on behalf of `actor`; returns how many there were. */
  async closeAll(operator: string, actor: string): Promise<number> {
    const ended = await this.db.deleteSessions(operator);
    await this.fleet.record(actor, "sign-out-everywhere", { operator, sessions: ended });
    return ended;
  }

  /** Drops expired sessions now and then (on sign-in), so the table does not grow forever. */
  private async sweep(at: number): Promise<void> {
    if (at - this.lastSweep < 3600_000) return;
    this.lastSweep = at;
    await this.db.deleteExpiredSessions(at);
  }
}
