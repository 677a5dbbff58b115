// HTTP/1.1 requests written byte for byte on a socket: request targets no client library would send
// (absolute-form, dot segments, encoded slashes), bodies trickled a byte at a time, and the time a
// server takes to cut a connection off.
import { connect } from "node:net";

export interface RawResponse {
  /** 0 when the server closed the connection without answering. */
  status: number;
  head: string;
  body: string;
  /** Milliseconds from connecting to the server closing the connection. */
  ms: number;
}

export interface RawRequest {
  port: number;
  method: string;
  target: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Send the body in pieces of this many bytes, one every `trickleMs` milliseconds. */
  trickle?: { bytes: number; everyMs: number };
  /** Give up (and report what arrived) after this many milliseconds. */
  timeoutMs?: number;
  /** Never end the headers: send one more header line every 300 ms instead. */
  partialHeaders?: boolean;
}

export function rawRequest(r: RawRequest): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const socket = connect(r.port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    const give = setTimeout(() => socket.destroy(), r.timeoutMs ?? 30_000);
    const finish = () => {
      clearTimeout(give);
      clearInterval(timer);
      const text = Buffer.concat(chunks).toString("latin1");
      const [head = "", body = ""] = text.split("\r\n\r\n", 2);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      resolve({ status, head, body, ms: performance.now() - start });
    };
    socket.on("data", (c) => chunks.push(c));
    socket.on("close", finish);
    socket.on("error", (e: NodeJS.ErrnoException) => {
      // A reset after the server answered is how a cut-off connection ends.
      if (e.code !== "ECONNRESET" && e.code !== "EPIPE") reject(e);
    });
    socket.on("connect", () => {
      const body = r.body === undefined ? undefined : Buffer.from(r.body);
      const headers = { host: "basalt.test", connection: "close", ...(body ? { "content-length": String(body.length) } : {}), ...r.headers };
      const head = `${r.method} ${r.target} HTTP/1.1\r\n${Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join("")}`;
      if (r.partialHeaders) {
        socket.write(head);
        timer = setInterval(() => !socket.destroyed && socket.write("x-more: 1\r\n"), 300);
        return;
      }
      socket.write(`${head}\r\n`);
      if (!body) return;
      if (!r.trickle) return void socket.write(body);
      let sent = 0;
      const step = r.trickle.bytes;
      timer = setInterval(() => {
        if (socket.destroyed || sent >= body.length) return clearInterval(timer);
        socket.write(body.subarray(sent, sent + step));
        sent += step;
      }, r.trickle.everyMs);
    });
  });
}
