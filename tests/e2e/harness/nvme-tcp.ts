// Speaks the first exchange of NVMe/TCP (ICReq → ICResp, NVM Express TCP Transport 3.6.2) so a test
// can tell an NVMe-over-TCP target from a port that merely accepts connections (QEMU's user-mode
// network accepts every forwarded connection on the host side).
import { connect } from "node:net";

const ICREQ = 0x00;
const ICRESP = 0x01;
const HEADER_LENGTH = 128;

export function nvmeTcpHandshake(port: number, timeoutMs = 5000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    let received = Buffer.alloc(0);
    socket.on("connect", () => {
      const pdu = Buffer.alloc(HEADER_LENGTH);
      pdu.writeUInt8(ICREQ, 0); // PDU type
      pdu.writeUInt8(0, 1); // flags
      pdu.writeUInt8(HEADER_LENGTH, 2); // header length
      pdu.writeUInt8(0, 3); // PDU data offset
      pdu.writeUInt32LE(HEADER_LENGTH, 4); // PDU length
      // PFV 0, HPDA 0, no digests, MAXR2T 0: the rest stays zero.
      socket.write(pdu);
    });
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 8) {
        clearTimeout(timer);
        done(received.readUInt8(0) === ICRESP && received.readUInt8(2) === HEADER_LENGTH);
      }
    });
    socket.on("error", () => {
      clearTimeout(timer);
      done(false);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      done(false);
    });
  });
}
