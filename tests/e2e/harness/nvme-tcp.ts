// A minimal NVMe-over-TCP host (initiator) over a plain TCP socket, enough for a test to read an
// exported namespace and compare it with what it should hold: connection setup, Fabrics Connect,
// controller enable, Identify, the discovery log and Read. One command at a time, no digests, no
// writes, no keep-alive (KATO 0).
//
// References, cited below by section:
//   TCP    NVM Express TCP Transport Specification 1.0a (PDU layouts, §3.6.2.x, in the order of
//          their PDU types: §3.6.2.3 is ICResp)
//   Base   NVM Express Base Specification 2.0 (properties §3.1.3, fabrics initialisation §3.5.2,
//          NQNs §4.5, Get Log Page §5.16, Identify §5.17, Fabrics commands §6: Connect §6.3,
//          Property Get §6.5, Property Set §6.6)
//   NVM    NVM Command Set Specification 1.0 (Read §3.2.4, the Identify Namespace data structure)
// Linux's target (drivers/nvme/target, what systemd-storagetm configures) is strict where the spec
// lets it be: the quirks it needs are noted where they apply.
import { randomUUID } from "node:crypto";
import { connect, type Socket } from "node:net";

export interface NvmeTcpTarget {
  /** Defaults to 127.0.0.1 (a port forwarded from a VM). */
  host?: string;
  port: number;
  /** Per exchange (a PDU awaited, a connection set up); default 30 s, generous for a TCG guest. */
  timeoutMs?: number;
}

/** Who we say we are in Connect (Base §6.3, Connect data: HOSTID and HOSTNQN). */
export interface NvmeHostIdentity {
  nqn: string;
  /** 16 bytes. */
  id: Buffer;
}

/** A UUID-based host NQN, the form Base §4.5 defines for hosts without a naming authority. */
export function createHostIdentity(): NvmeHostIdentity {
  const uuid = randomUUID();
  return { nqn: `nqn.2014-08.org.nvmexpress:uuid:${uuid}`, id: Buffer.from(uuid.replaceAll("-", ""), "hex") };
}

/** The well-known NQN of a discovery controller (Base §4.5). */
export const DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery";

/** A failed step of the exchange: what was being done, and the target's status or the transport's error. */
export class NvmeTcpError extends Error {
  constructor(step: string, detail: string) {
    super(`NVMe/TCP ${step} failed: ${detail}`);
  }
}

// --- PDUs (TCP §3.6.2) -------------------------------------------------------------------------

const PDU = { ICReq: 0x00, ICResp: 0x01, H2CTermReq: 0x02, C2HTermReq: 0x03, CapsuleCmd: 0x04, CapsuleResp: 0x05, C2HData: 0x07, R2T: 0x09 } as const;
const PDU_NAMES: Record<number, string> = Object.fromEntries(Object.entries(PDU).map(([name, type]) => [type, name]));
/** C2HData flags (TCP §3.6.2.9): last PDU of the transfer; SUCCESS means no CapsuleResp follows. */
const C2H_LAST_PDU = 0x04;
const C2H_SUCCESS = 0x08;
const ICREQ_LENGTH = 128;
const CAPSULE_CMD_HLEN = 8 + 64; // common header + submission queue entry (TCP §3.6.2.6)
const CAPSULE_RESP_HLEN = 8 + 16; // common header + completion queue entry (TCP §3.6.2.7)
const MAX_PDU = 16 * 1024 * 1024; // a sanity bound: no PDU we provoke comes near it

/** TCP §3.6.2.5: why a target gave up on the connection. */
const FATAL_ERRORS: Record<number, string> = {
  1: "invalid PDU header field",
  2: "PDU sequence error",
  3: "header digest error",
  4: "data transfer out of range",
  5: "data transfer limit exceeded",
  6: "unsupported parameter",
};

interface Pdu {
  type: number;
  flags: number;
  hlen: number;
  pdo: number;
  /** The whole PDU, common header included. */
  bytes: Buffer;
}

/** Splits the byte stream of one connection into PDUs by their common header (TCP §3.6.2.1). */
class PduReader {
  private buffered: Buffer = Buffer.alloc(0);
  private readonly ready: Pdu[] = [];
  private waiter: { resolve: (p: Pdu) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  constructor(private readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
      this.split();
    });
    socket.on("error", (e) => this.fail(e));
    socket.on("close", () => this.fail(new Error("the target closed the connection")));
  }

  private split(): void {
    while (this.buffered.length >= 8) {
      const plen = this.buffered.readUInt32LE(4);
      const hlen = this.buffered.readUInt8(2);
      if (plen < 8 || hlen < 8 || hlen > plen || plen > MAX_PDU) {
        this.fail(new Error(`malformed PDU header (type ${this.buffered[0]}, HLEN ${hlen}, PLEN ${plen})`));
        this.socket.destroy(); // the stream cannot be framed any more
        return;
      }
      if (this.buffered.length < plen) return;
      const bytes = Buffer.from(this.buffered.subarray(0, plen));
      this.buffered = this.buffered.subarray(plen);
      this.deliver({ type: bytes.readUInt8(0), flags: bytes.readUInt8(1), hlen, pdo: bytes.readUInt8(3), bytes });
    }
  }

  private deliver(pdu: Pdu): void {
    const w = this.waiter;
    this.waiter = undefined;
    if (w) w.resolve(pdu);
    else this.ready.push(pdu);
  }

  private fail(e: Error): void {
    this.failure ??= e;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.failure);
  }

  next(timeoutMs: number): Promise<Pdu> {
    const queued = this.ready.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`no PDU from the target within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.waiter = {
        resolve: (p) => {
          clearTimeout(timer);
          resolve(p);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }
}

/** A common header (TCP §3.6.2.1): type, flags, HLEN, PDO, PLEN. */
function commonHeader(pdu: Buffer, type: number, hlen: number, pdo: number): void {
  pdu.writeUInt8(type, 0);
  pdu.writeUInt8(0, 1); // flags: no header or data digest
  pdu.writeUInt8(hlen, 2);
  pdu.writeUInt8(pdo, 3);
  pdu.writeUInt32LE(pdu.length, 4);
}

// --- Completion status (Base, "Status Field": type SCT and code SC) ----------------------------

const STATUS_NAMES: Record<string, string> = {
  "0/01": "Invalid Command Opcode",
  "0/02": "Invalid Field in Command",
  "0/0c": "Command Sequence Error",
  "0/06": "Internal Error",
  "0/0b": "Invalid Namespace or Format",
  "0/80": "LBA Out of Range",
  "1/80": "Incompatible Format",
  "1/81": "Controller Busy",
  "1/82": "Connect Invalid Parameters",
  "1/83": "Connect Restart Discovery",
  "1/84": "Connect Invalid Host",
  "1/85": "Invalid Queue Type",
};

/** The completion's status as "SCT 1h SC 82h (Connect Invalid Parameters)", or undefined for success. */
function statusOf(cqe: Buffer): string | undefined {
  const sf = cqe.readUInt16LE(14) >> 1; // bit 0 is the phase tag
  const sc = sf & 0xff;
  const sct = (sf >> 8) & 0x7;
  if (sc === 0 && sct === 0) return undefined;
  const hex = (n: number) => n.toString(16).padStart(2, "0");
  const name = STATUS_NAMES[`${sct}/${hex(sc)}`];
  return `status SCT ${sct}h SC ${hex(sc)}h${name ? ` (${name})` : ""}${sf & 0x4000 ? ", DNR" : ""}`;
}

// --- One queue = one TCP connection ------------------------------------------------------------

/** Byte 15 of an SGL descriptor: type in bits 7:4, sub type in bits 3:0 (Base, SGL descriptors). */
const SGL_DATA_BLOCK_OFFSET = 0x01; // Data Block, sub type Offset: data in the capsule (Connect data)
const SGL_TRANSPORT_DATA_BLOCK = 0x5a; // Transport Data Block, sub type Transport: data in C2HData/H2CData PDUs
/** CDW0 flags: PSDT 01b, "SGLs for the data". Linux's target refuses other values with Invalid Field. */
const FLAGS_SGL = 0x40;

interface Command {
  step: string;
  /** The 64-byte submission queue entry; the queue fills in the command identifier, flags and SGL. */
  sqe: Buffer;
  /** Data sent inside the capsule (host to controller). */
  inCapsule?: Buffer;
  /** Bytes the controller is to send back (controller to host). */
  receive?: number;
}

interface Completion {
  /** The 16-byte completion queue entry. */
  cqe: Buffer;
  data: Buffer;
}

class Queue {
  private cid = 0;

  private constructor(
    private readonly socket: Socket,
    private readonly reader: PduReader,
    private readonly timeoutMs: number,
    /** In-capsule data starts at a multiple of this (ICResp CPDA). */
    private readonly dataAlignment: number,
  ) {}

  /** Opens the connection and exchanges ICReq/ICResp (TCP §3.6.2.2, §3.6.2.3). */
  static async open(target: NvmeTcpTarget, what: string): Promise<Queue> {
    const timeoutMs = target.timeoutMs ?? 30_000;
    const host = target.host ?? "127.0.0.1";
    const socket = connect({ host, port: target.port });
    socket.setNoDelay(true);
    const reader = new PduReader(socket);
    try {
      const icreq = Buffer.alloc(ICREQ_LENGTH);
      commonHeader(icreq, PDU.ICReq, ICREQ_LENGTH, 0);
      icreq.writeUInt16LE(0, 8); // PFV: version 1.0
      icreq.writeUInt8(0, 10); // HPDA: C2H data right after the header
      icreq.writeUInt8(0, 11); // DGST: no header digest, no data digest
      icreq.writeUInt32LE(0, 12); // MAXR2T (0's based): we never write
      socket.write(icreq);
      const resp = await reader.next(timeoutMs);
      if (resp.type !== PDU.ICResp) throw new Error(`expected ICResp, got ${describe(resp)}`);
      if (resp.hlen !== ICREQ_LENGTH || resp.bytes.length < ICREQ_LENGTH) throw new Error(`ICResp with HLEN ${resp.hlen}, PLEN ${resp.bytes.length}`);
      const pfv = resp.bytes.readUInt16LE(8);
      const cpda = resp.bytes.readUInt8(10);
      const dgst = resp.bytes.readUInt8(11);
      if (pfv !== 0) throw new Error(`ICResp offers PDU format version ${pfv}, we speak 0`);
      if (dgst !== 0) throw new Error(`ICResp enables digests (DGST ${dgst}) we did not ask for`);
      return new Queue(socket, reader, timeoutMs, (cpda + 1) * 4);
    } catch (e) {
      socket.destroy();
      throw new NvmeTcpError(`connection set-up (ICReq/ICResp) to ${host}:${target.port} for ${what}`, (e as Error).message);
    }
  }

  /** Sends one command capsule and collects its data and completion (TCP §3.6.2.6, §3.6.2.7, §3.6.2.9). */
  async execute(c: Command): Promise<Completion> {
    const cid = this.cid;
    this.cid = (this.cid + 1) & 0xffff;
    const sqe = Buffer.from(c.sqe);
    sqe.writeUInt8(FLAGS_SGL, 1);
    sqe.writeUInt16LE(cid, 2);
    // SGL1 (SQE bytes 24-39): address (an offset here), length, descriptor type.
    sqe.writeBigUInt64LE(0n, 24);
    sqe.writeUInt32LE(c.inCapsule?.length ?? c.receive ?? 0, 32);
    sqe.writeUInt8(c.inCapsule ? SGL_DATA_BLOCK_OFFSET : SGL_TRANSPORT_DATA_BLOCK, 39);
    const pdo = c.inCapsule ? Math.ceil(CAPSULE_CMD_HLEN / this.dataAlignment) * this.dataAlignment : 0;
    const pdu = Buffer.alloc(c.inCapsule ? pdo + c.inCapsule.length : CAPSULE_CMD_HLEN);
    sqe.copy(pdu, 8);
    c.inCapsule?.copy(pdu, pdo);
    commonHeader(pdu, PDU.CapsuleCmd, CAPSULE_CMD_HLEN, pdo);
    this.socket.write(pdu);

    const data = Buffer.alloc(c.receive ?? 0);
    let received = 0;
    const fail = (detail: string) => new NvmeTcpError(c.step, detail);
    for (;;) {
      let p: Pdu;
      try {
        p = await this.reader.next(this.timeoutMs);
      } catch (e) {
        throw fail((e as Error).message);
      }
      // CapsuleResp, C2HData and C2HTermReq all have 24-byte headers.
      if (p.hlen < 24) throw fail(`${describe(p)} with a ${p.hlen}-byte header`);
      if (p.type === PDU.C2HData) {
        // TCP §3.6.2.9: CCCID (8), DATAO (12), DATAL (16); the data starts at PDO.
        const cccid = p.bytes.readUInt16LE(8);
        const datao = p.bytes.readUInt32LE(12);
        const datal = p.bytes.readUInt32LE(16);
        if (cccid !== cid) throw fail(`C2HData for command ${cccid}, expected ${cid}`);
        if (datao + datal > data.length || p.pdo + datal > p.bytes.length)
          throw fail(`C2HData out of range (DATAO ${datao}, DATAL ${datal}, buffer ${data.length})`);
        p.bytes.copy(data, datao, p.pdo, p.pdo + datal);
        received += datal;
        // With SUCCESS set the command is complete and no CapsuleResp follows (only when the host
        // disabled SQ flow control in Connect, which we do not: handled all the same).
        if (p.flags & C2H_SUCCESS && p.flags & C2H_LAST_PDU) return { cqe: Buffer.alloc(16), data: data.subarray(0, received) };
      } else if (p.type === PDU.CapsuleResp) {
        const cqe = p.bytes.subarray(8, CAPSULE_RESP_HLEN);
        if (cqe.readUInt16LE(12) !== cid) throw fail(`completion for command ${cqe.readUInt16LE(12)}, expected ${cid}`);
        const status = statusOf(cqe);
        if (status) throw fail(status);
        if (received !== data.length) throw fail(`the target sent ${received} of ${data.length} bytes`);
        return { cqe, data };
      } else if (p.type === PDU.C2HTermReq) {
        // TCP §3.6.2.5: FES (8), FEI (10); the target closes the connection after it.
        const fes = p.bytes.readUInt16LE(8);
        throw fail(`the target terminated the connection (C2HTermReq, FES ${fes}: ${FATAL_ERRORS[fes] ?? "unknown"}, FEI ${p.bytes.readUInt32LE(10)})`);
      } else {
        throw fail(`unexpected ${describe(p)}`);
      }
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

function describe(p: Pdu): string {
  return `${PDU_NAMES[p.type] ?? `PDU type ${p.type}`} (${p.bytes.length} bytes)`;
}

/** A submission queue entry with its opcode and namespace (the queue adds CID, flags and SGL). */
function sqe(opcode: number, nsid = 0): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt8(opcode, 0);
  b.writeUInt32LE(nsid, 4);
  return b;
}

// --- Fabrics commands (Base §6) ----------------------------------------------------------------

const FABRICS_OPCODE = 0x7f;
const FCTYPE = { PropertySet: 0x00, Connect: 0x01, PropertyGet: 0x04 } as const;

function fabrics(fctype: number): Buffer {
  const b = sqe(FABRICS_OPCODE);
  b.writeUInt8(fctype, 4);
  return b;
}

/** Controller properties (Base §3.1.3): offset and size in bytes. */
const PROPERTY = { CAP: { offset: 0x00, size: 8 }, CC: { offset: 0x14, size: 4 }, CSTS: { offset: 0x1c, size: 4 } } as const;
type Property = (typeof PROPERTY)[keyof typeof PROPERTY];

/** Queue size (0's based SQSIZE): Linux's target refuses 0 and anything above CAP.MQES. */
const QUEUE_SIZE = 32;

/** Connect (Base §6.3): joins a queue to a controller; the admin queue (QID 0) creates one. */
async function connectQueue(q: Queue, qid: number, subnqn: string, host: NvmeHostIdentity, cntlid: number): Promise<number> {
  const cmd = fabrics(FCTYPE.Connect);
  cmd.writeUInt16LE(0, 40); // RECFMT 0
  cmd.writeUInt16LE(qid, 42);
  cmd.writeUInt16LE(QUEUE_SIZE - 1, 44); // SQSIZE, 0's based
  cmd.writeUInt8(0, 46); // CATTR: SQ flow control stays on, so every command ends with a CapsuleResp
  cmd.writeUInt32LE(0, 48); // KATO 0: no keep-alive timer (the target drops the controller with the connection)
  // Connect data (1024 bytes, in the capsule): HOSTID 0-15, CNTLID 16-17, SUBNQN 256-511, HOSTNQN 512-767.
  const data = Buffer.alloc(1024);
  host.id.copy(data, 0, 0, 16);
  data.writeUInt16LE(cntlid, 16);
  data.write(subnqn, 256, 255, "utf8");
  data.write(host.nqn, 512, 255, "utf8");
  const step = `Connect (QID ${qid}, subsystem ${subnqn})`;
  const { cqe } = await q.execute({ step, sqe: cmd, inCapsule: data });
  // DW0 of a successful Connect: CNTLID in bits 15:0, AUTHREQ in bits 31:16.
  if (cqe.readUInt16LE(2) !== 0) throw new NvmeTcpError(step, `the target requires in-band authentication (AUTHREQ ${cqe.readUInt16LE(2)})`);
  return cqe.readUInt16LE(0);
}

async function propertyGet(q: Queue, p: Property, name: string): Promise<bigint> {
  const cmd = fabrics(FCTYPE.PropertyGet);
  cmd.writeUInt8(p.size === 8 ? 1 : 0, 40); // ATTRIB: property size
  cmd.writeUInt32LE(p.offset, 44); // OFST
  const { cqe } = await q.execute({ step: `Property Get ${name}`, sqe: cmd });
  return p.size === 8 ? cqe.readBigUInt64LE(0) : BigInt(cqe.readUInt32LE(0));
}

async function propertySet(q: Queue, p: Property, name: string, value: bigint): Promise<void> {
  const cmd = fabrics(FCTYPE.PropertySet);
  cmd.writeUInt8(p.size === 8 ? 1 : 0, 40);
  cmd.writeUInt32LE(p.offset, 44);
  cmd.writeBigUInt64LE(value, 48); // VALUE
  await q.execute({ step: `Property Set ${name}`, sqe: cmd });
}

// --- Admin commands (Base §5) ------------------------------------------------------------------

const ADMIN = { GetLogPage: 0x02, Identify: 0x06 } as const;
const CNS = { Namespace: 0x00, Controller: 0x01, ActiveNamespaces: 0x02 } as const;
const LOG_DISCOVERY = 0x70;

function ascii(b: Buffer): string {
  return b.toString("latin1").replace(/[\0 ]+$/, "");
}

/** The parts of the Identify Controller data structure (Base §5.17.2.1) a reader needs. */
export interface ControllerInfo {
  cntlid: number;
  serial: string;
  model: string;
  firmware: string;
  /** Maximum data transfer size in bytes, or undefined when the controller sets no limit. */
  maxTransfer: number | undefined;
  namespaces: number;
  subnqn: string;
}

/** The parts of the Identify Namespace data structure (NVM) a reader needs. */
export interface NamespaceInfo {
  nsid: number;
  /** NSZE: size in logical blocks. */
  blocks: number;
  blockSize: number;
}

/** One Discovery Log Page entry (Base §5.16, Discovery log page). */
export interface DiscoveryEntry {
  /** 3 = TCP. */
  trtype: number;
  /** 1 = referral to another discovery service, 2 = NVM subsystem, 3 = this discovery controller. */
  subtype: number;
  portId: number;
  /** The port (service id) as the target knows it: the guest's port, not the forwarded one. */
  trsvcid: string;
  traddr: string;
  subnqn: string;
}

/** A controller reached over its admin queue, enabled and ready for admin commands. */
export class NvmeTcpController {
  private constructor(
    private readonly admin: Queue,
    private readonly target: NvmeTcpTarget,
    readonly subnqn: string,
    readonly host: NvmeHostIdentity,
    readonly cntlid: number,
    /** CAP.MPSMIN as bytes: the unit of MDTS. */
    private readonly minPageSize: number,
  ) {}

  /**
   * Connects the admin queue to `subnqn` (dynamic controller: CNTLID FFFFh) and enables the
   * controller as Base §3.5.2 describes for fabrics: read CAP, set CC.EN, wait for CSTS.RDY.
   */
  static async connect(target: NvmeTcpTarget, subnqn: string, host = createHostIdentity()): Promise<NvmeTcpController> {
    const q = await Queue.open(target, `the admin queue of ${subnqn}`);
    try {
      const cntlid = await connectQueue(q, 0, subnqn, host, 0xffff);
      const cap = await propertyGet(q, PROPERTY.CAP, "CAP");
      const timeoutMs = Math.max(Number((cap >> 24n) & 0xffn) * 500, 5000); // CAP.TO, in 500 ms units
      const minPageSize = 2 ** (12 + Number((cap >> 48n) & 0xfn)); // CAP.MPSMIN
      // CC: I/O completion entries 2^4 bytes (IOCQES, bits 23:20), submission entries 2^6 (IOSQES,
      // bits 19:16), NVM command set, 4 KiB pages, round robin; EN (bit 0). Linux's target fails the
      // controller (CSTS.CFS) when IOSQES/IOCQES differ from these, even for a discovery controller.
      await propertySet(q, PROPERTY.CC, "CC (enable)", (4n << 20n) | (6n << 16n) | 1n);
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const csts = await propertyGet(q, PROPERTY.CSTS, "CSTS");
        if (csts & 2n) throw new NvmeTcpError("controller enable", "the controller reports a fatal status (CSTS.CFS)");
        if (csts & 1n) break; // RDY
        if (Date.now() > deadline) throw new NvmeTcpError("controller enable", `CSTS.RDY not set within ${timeoutMs / 1000} s (CAP.TO)`);
        await new Promise((r) => setTimeout(r, 100));
      }
      return new NvmeTcpController(q, target, subnqn, host, cntlid, minPageSize);
    } catch (e) {
      q.close();
      throw e;
    }
  }

  async identifyController(): Promise<ControllerInfo> {
    const cmd = sqe(ADMIN.Identify);
    cmd.writeUInt8(CNS.Controller, 40); // CDW10.CNS
    const { data } = await this.admin.execute({ step: "Identify Controller", sqe: cmd, receive: 4096 });
    const mdts = data.readUInt8(77);
    return {
      serial: ascii(data.subarray(4, 24)),
      model: ascii(data.subarray(24, 64)),
      firmware: ascii(data.subarray(64, 72)),
      maxTransfer: mdts ? 2 ** mdts * this.minPageSize : undefined,
      cntlid: data.readUInt16LE(78),
      namespaces: data.readUInt32LE(516), // NN
      subnqn: ascii(data.subarray(768, 1024)),
    };
  }

  /** The active namespace IDs (CNS 02h: a list of up to 1024, in increasing order). */
  async activeNamespaces(): Promise<number[]> {
    const cmd = sqe(ADMIN.Identify);
    cmd.writeUInt8(CNS.ActiveNamespaces, 40);
    const { data } = await this.admin.execute({ step: "Identify Active Namespace ID list", sqe: cmd, receive: 4096 });
    const ids: number[] = [];
    for (let i = 0; i < 1024 && data.readUInt32LE(i * 4) !== 0; i++) ids.push(data.readUInt32LE(i * 4));
    return ids;
  }

  async identifyNamespace(nsid: number): Promise<NamespaceInfo> {
    const cmd = sqe(ADMIN.Identify, nsid);
    cmd.writeUInt8(CNS.Namespace, 40);
    const { data } = await this.admin.execute({ step: `Identify Namespace ${nsid}`, sqe: cmd, receive: 4096 });
    // FLBAS bits 3:0 pick the LBA format in use; each format (from byte 128, 4 bytes) has LBADS,
    // log2 of the block size, in its byte 2.
    const format = data.readUInt8(26) & 0xf;
    const lbads = data.readUInt8(128 + format * 4 + 2);
    if (lbads < 9) throw new NvmeTcpError(`Identify Namespace ${nsid}`, `LBA format ${format} has LBADS ${lbads} (inactive namespace?)`);
    return { nsid, blocks: Number(data.readBigUInt64LE(0)), blockSize: 2 ** lbads };
  }

  /** The Discovery Log Page (LID 70h): on a discovery controller, what the port offers. */
  async discoveryLog(): Promise<DiscoveryEntry[]> {
    // The header (1024 bytes) says how many 1024-byte records follow (NUMREC, bytes 8-15).
    const header = await this.getLogPage(LOG_DISCOVERY, 0, 1024, "Get Log Page (discovery log header)");
    const count = Number(header.readBigUInt64LE(8));
    if (count === 0) return [];
    const records = await this.getLogPage(LOG_DISCOVERY, 1024, count * 1024, `Get Log Page (discovery log, ${count} records)`);
    return Array.from({ length: count }, (_, i) => {
      const r = records.subarray(i * 1024, (i + 1) * 1024);
      return {
        trtype: r.readUInt8(0),
        subtype: r.readUInt8(2),
        portId: r.readUInt16LE(4),
        trsvcid: ascii(r.subarray(32, 64)),
        subnqn: ascii(r.subarray(256, 512)),
        traddr: ascii(r.subarray(512, 768)),
      };
    });
  }

  private async getLogPage(lid: number, offset: number, length: number, step: string): Promise<Buffer> {
    const numd = length / 4 - 1; // number of dwords, 0's based
    const cmd = sqe(ADMIN.GetLogPage);
    cmd.writeUInt32LE(lid | ((numd & 0xffff) << 16), 40); // CDW10: LID, NUMDL
    cmd.writeUInt32LE(numd >>> 16, 44); // CDW11: NUMDU
    cmd.writeBigUInt64LE(BigInt(offset), 48); // CDW12-13: LPOL, LPOU
    return (await this.admin.execute({ step, sqe: cmd, receive: length })).data;
  }

  /** Connects I/O queue 1 (its own TCP connection) to this controller. */
  async openIoQueue(): Promise<IoQueue> {
    const q = await Queue.open(this.target, `I/O queue 1 of ${this.subnqn}`);
    try {
      await connectQueue(q, 1, this.subnqn, this.host, this.cntlid);
      return new IoQueue(q);
    } catch (e) {
      q.close();
      throw e;
    }
  }

  /** Drops the connection; Linux's target deletes the controller with its admin queue. */
  close(): void {
    this.admin.close();
  }
}

const NVM_READ = 0x02;

export class IoQueue {
  constructor(private readonly q: Queue) {}

  /** Read (NVM §3.2.4): `count` blocks from `lba`, in one command. */
  async read(nsid: number, lba: number, count: number, blockSize: number): Promise<Buffer> {
    const cmd = sqe(NVM_READ, nsid);
    cmd.writeBigUInt64LE(BigInt(lba), 40); // CDW10-11: SLBA
    cmd.writeUInt16LE(count - 1, 48); // CDW12 bits 15:0: NLB, 0's based
    return (await this.q.execute({ step: `Read of LBA ${lba}+${count}`, sqe: cmd, receive: count * blockSize })).data;
  }

  close(): void {
    this.q.close();
  }
}

// --- What a test uses ------------------------------------------------------------------------

/** Asks the target's discovery controller what it exports on this port. */
export async function discover(target: NvmeTcpTarget): Promise<DiscoveryEntry[]> {
  const ctrl = await NvmeTcpController.connect(target, DISCOVERY_NQN);
  try {
    return await ctrl.discoveryLog();
  } finally {
    ctrl.close();
  }
}

/** One namespace of a subsystem, open for reading. */
export class NvmeNamespace {
  private constructor(
    private readonly ctrl: NvmeTcpController,
    private readonly io: IoQueue,
    readonly controller: ControllerInfo,
    readonly info: NamespaceInfo,
    /** Bytes per Read command. */
    private readonly chunk: number,
  ) {}

  /** Connects to `subnqn`, identifies it and its first active namespace, and opens an I/O queue. */
  static async open(target: NvmeTcpTarget, subnqn: string): Promise<NvmeNamespace> {
    const ctrl = await NvmeTcpController.connect(target, subnqn);
    try {
      const controller = await ctrl.identifyController();
      const [nsid] = await ctrl.activeNamespaces();
      if (nsid === undefined) throw new NvmeTcpError("Identify Active Namespace ID list", `${subnqn} has no active namespace`);
      const info = await ctrl.identifyNamespace(nsid);
      const io = await ctrl.openIoQueue();
      const chunk = Math.min(controller.maxTransfer ?? Number.POSITIVE_INFINITY, 256 * 1024);
      return new NvmeNamespace(ctrl, io, controller, info, chunk);
    } catch (e) {
      ctrl.close();
      throw e;
    }
  }

  get size(): number {
    return this.info.blocks * this.info.blockSize;
  }

  /** `length` bytes from byte `offset`; both multiples of the block size. */
  async read(offset: number, length: number): Promise<Buffer> {
    const bs = this.info.blockSize;
    if (offset % bs || length % bs) throw new Error(`read of ${length} bytes at ${offset}: not aligned to the ${bs}-byte blocks`);
    if (offset + length > this.size) throw new Error(`read of ${length} bytes at ${offset}: beyond the namespace's ${this.size} bytes`);
    const parts: Buffer[] = [];
    for (let done = 0; done < length; ) {
      const n = Math.min(this.chunk, length - done);
      parts.push(await this.io.read(this.info.nsid, (offset + done) / bs, n / bs, bs));
      done += n;
    }
    return Buffer.concat(parts);
  }

  close(): void {
    this.io.close();
    this.ctrl.close();
  }
}

/**
 * Whether `port` answers an ICReq with an ICResp: tells an NVMe/TCP target from a port that merely
 * accepts connections (QEMU's user-mode network accepts every forwarded connection on the host side).
 */
export async function nvmeTcpHandshake(port: number, timeoutMs = 5000): Promise<boolean> {
  try {
    (await Queue.open({ port, timeoutMs }, "a handshake")).close();
    return true;
  } catch {
    return false;
  }
}
