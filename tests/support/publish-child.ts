// A basalt serve process that publishes a release into a data directory and is killed (SIGKILL,
// by itself) at one step of it: src/fleet/publish.test.ts then opens the same directory and
// database, as a restarted server would. Run as
//   node --import tsx tests/support/publish-child.ts '{"data": …, "database": …, "release": DIR, "killAt": STEP}'
// where DIR holds release.json and the files, and STEP is one of KILL_POINTS (publishing.ts).
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { ReleaseManifest } from "../../src/contract/release-manifest.js";
import { openFleet } from "../../src/server/server.js";
import { type KillPoint, type PublishInProcessOptions, publishInProcess, type StandIn } from "./publishing.js";
import { hookStatements } from "./sql-faults.js";

interface ChildOptions {
  data: string;
  database?: string;
  release: string;
  killAt: KillPoint;
}

const die = (): never => {
  process.kill(process.pid, "SIGKILL");
  throw new Error("unreachable");
};

async function main(o: ChildOptions): Promise<void> {
  const manifest = JSON.parse(readFileSync(join(o.release, "release.json"), "utf8")) as ReleaseManifest;
  const r: StandIn = { manifest, files: Object.fromEntries(manifest.files.map((f) => [f.name, readFileSync(join(o.release, f.name))])) };
  const fleet = await openFleet({ data: o.data, ...(o.database ? { database: o.database } : {}) });
  const { artifacts, db } = fleet;
  let body: PublishInProcessOptions["body"];
  switch (o.killAt) {
    case "begin":
      artifacts.discard = die;
      break;
    case "upload": {
      const incoming = join(o.data, "incoming", manifest.id, manifest.version);
      const written = () => existsSync(incoming) && readdirSync(incoming).some((n) => n.startsWith(".") && statSync(join(incoming, n)).size > 0);
      body = (_name, bytes, i) =>
        i === 1
          ? Readable.from(
              (async function* () {
                yield bytes.subarray(0, bytes.length >> 1);
                // Killed once part of the file is on disk, under its temporary name.
                while (!written()) await new Promise((resolve) => setTimeout(resolve, 5));
                die();
              })(),
            )
          : undefined;
      break;
    }
    case "commit-store":
      artifacts.commit = die;
      break;
    case "commit-db":
      db.commitRelease = die;
      break;
    case "commit-db-transaction": {
      const transaction = db.transaction.bind(db);
      db.transaction = (fn) => transaction((tx) => fn(hookStatements(tx, /^insert into "releases" /, { after: die })));
      break;
    }
    case "promote":
      db.saveChannel = die;
      break;
  }
  await publishInProcess(fleet, r, body ? { body } : {});
  throw new Error(`published without being killed at ${o.killAt}`);
}

const arg = process.argv[2];
if (!arg) throw new Error("usage: publish-child.ts OPTIONS-JSON");
await main(JSON.parse(arg) as ChildOptions);
