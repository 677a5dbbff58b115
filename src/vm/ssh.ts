// SSH into a guest from Node (ssh2): no ssh client needed on the host, exit codes kept, and a
// password attempt can be made to prove it is refused.
import { connect } from "node:net";
import ssh2 from "ssh2";

// ssh2 is CommonJS: its classes come from the default export under ESM.
const { Client } = ssh2;
type Client = InstanceType<typeof Client>;

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface SshTarget {
  port: number;
  user: string;
  host?: string;
}

export class SshSession {
  private constructor(private readonly client: Client) {}

  static connect(target: SshTarget, privateKey: string, timeoutMs = 10_000): Promise<SshSession> {
    return new Promise((resolve, reject) => {
      const client = new Client();
      let ready = false;
      client
        .on("ready", () => {
          ready = true;
          resolve(new SshSession(client));
        })
        .on("error", (e) => {
          client.end();
          reject(e);
        })
        // A guest that reboots after sending its banner closes the connection mid-handshake: ssh2
        // then reports no error, only the close (seen while a failing release rebooted itself).
        .on("close", () => {
          if (!ready) reject(new Error("the connection closed during the SSH handshake"));
        })
        .connect({
          host: target.host ?? "127.0.0.1",
          port: target.port,
          username: target.user,
          privateKey,
          readyTimeout: timeoutMs,
          // A guest that reboots under an open session sends nothing more; give up on it in ~20 s.
          keepaliveInterval: 5000,
          keepaliveCountMax: 4,
        });
    });
  }

  exec(command: string, timeoutMs = 120_000): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`ssh command timed out after ${timeoutMs / 1000} s: ${command}`)), timeoutMs);
      this.client.exec(command, (err, stream) => {
        if (err) {
          clearTimeout(timer);
          reject(err);
          return;
        }
        let stdout = "";
        let stderr = "";
        let code = -1;
        stream.on("data", (d: Buffer) => {
          stdout += d.toString("utf8");
        });
        stream.stderr.on("data", (d: Buffer) => {
          stderr += d.toString("utf8");
        });
        stream.on("exit", (c: number | null) => {
          code = c ?? -1;
        });
        stream.on("close", () => {
          clearTimeout(timer);
          resolve({ code, stdout, stderr });
        });
      });
    });
  }

  close(): void {
    this.client.end();
  }
}

/** Whether the server accepts this user and password (it must not, on an appliance). */
export function passwordAccepted(target: SshTarget, password: string, timeoutMs = 10_000): Promise<{ accepted: boolean; detail: string }> {
  return new Promise((resolve) => {
    const client = new Client();
    client
      .on("ready", () => {
        client.end();
        resolve({ accepted: true, detail: "logged in" });
      })
      .on("error", (e) => {
        client.end();
        resolve({ accepted: false, detail: e.message });
      })
      .connect({
        host: target.host ?? "127.0.0.1",
        port: target.port,
        username: target.user,
        password,
        tryKeyboard: true,
        readyTimeout: timeoutMs,
      });
  });
}

/**
 * Waits until an SSH server answers on loopback `port` with its banner (QEMU's port forward accepts
 * connections before the guest listens, so a connection alone proves nothing). False when
 * `stillRunning` says the machine went away or `timeoutMs` passed.
 */
export async function waitForSshBanner(port: number, timeoutMs: number, stillRunning: () => boolean): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && stillRunning()) {
    const answered = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: "127.0.0.1", port });
      const done = (ok: boolean) => {
        socket.destroy();
        resolve(ok);
      };
      socket.setTimeout(5000, () => done(false));
      socket.on("data", (d: Buffer) => done(d.toString("latin1").startsWith("SSH-")));
      socket.on("error", () => done(false));
      socket.on("close", () => done(false));
    });
    if (answered) return true;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return false;
}
