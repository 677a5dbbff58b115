// The operator API from the command line (basalt publish, basalt fleet): one request helper that
// turns network failures and refusals into one-line errors naming the URL.
import { errorFromStatus, UserError } from "../errors.js";

export class ApiClient {
  readonly base: string;

  constructor(
    server: string,
    private readonly token: string,
  ) {
    if (!/^https?:\/\//.test(server)) throw new UserError(`--server must be an http:// or https:// URL, not ${JSON.stringify(server)}`);
    this.base = server.replace(/\/+$/, "");
  }

  /** Calls `path` (under /api/v1) with a JSON body, or with `init`'s own body and headers. */
  async request<T = unknown>(method: string, path: string, body?: unknown, init: RequestInit & { duplex?: "half" } = {}): Promise<T> {
    const url = `${this.base}/api/v1${path}`;
    const headers: Record<string, string> = { ...(init.headers as Record<string, string>), authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    let res: Response;
    try {
      res = await fetch(url, { ...init, method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    } catch (e) {
      const cause = (e as Error).cause;
      throw new UserError(`${url}: ${cause instanceof Error ? cause.message : (e as Error).message}`);
    }
    const text = await res.text();
    if (!res.ok) {
      let msg = text;
      try {
        msg = (JSON.parse(text) as { error?: string }).error ?? text;
      } catch {}
      throw errorFromStatus(res.status, `${method} ${url}: ${res.status} ${msg}`);
    }
    return (text ? JSON.parse(text) : undefined) as T;
  }
}
