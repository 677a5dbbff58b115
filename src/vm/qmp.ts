// The QEMU Machine Protocol over the VM's unix socket: enough to power a guest down (ACPI) or quit.
import { connect, type Socket } from "node:net";

export class Qmp {
  private buffer = "";
  private waiters: ((msg: Record<string, unknown>) => void)[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.buffer += chunk;
      let nl = this.buffer.indexOf("\n");
      while (nl >= 0) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        nl = this.buffer.indexOf("\n");
        if (!line) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        // Asynchronous events ("event": …) are not answers to commands.
        if ("event" in msg) continue;
        this.waiters.shift()?.(msg);
      }
    });
  }

  static async connect(path: string, timeoutMs = 5000): Promise<Qmp> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`QMP socket ${path} did not answer`));
      }, timeoutMs);
      s.once("connect", () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    const qmp = new Qmp(socket);
    await qmp.next(); // greeting
    await qmp.execute("qmp_capabilities");
    return qmp;
  }

  private next(): Promise<Record<string, unknown>> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const answer = this.next();
    this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    const msg = await answer;
    if (msg.error) throw new Error(`QMP ${command}: ${JSON.stringify(msg.error)}`);
    return msg.return;
  }

  close(): void {
    this.socket.destroy();
  }
}
