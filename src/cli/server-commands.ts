// basalt serve and basalt publish: the update server and the operator's side of it.
import { existsSync, readFileSync } from "node:fs";
import type { Command } from "commander";
import pc from "picocolors";
import { UserError } from "../errors.js";
import { signDetached, updateKeyPaths } from "../keys/update-key.js";
import { createReporter } from "../report/reporter.js";
import { publishRelease } from "../server/publish.js";
import { createServer } from "../server/server.js";
import { LocalStore } from "../server/store.js";

/** The operator token: BASALT_TOKEN, or the first line of a file (never a command-line argument). */
function readToken(file: string | undefined): string | undefined {
  if (file) {
    if (!existsSync(file)) throw new UserError(`${file}: no such token file`);
    const t = readFileSync(file, "utf8").split("\n")[0]?.trim();
    if (!t || t.length < 16) throw new UserError(`${file}: the token must be at least 16 characters`);
    return t;
  }
  return process.env.BASALT_TOKEN || undefined;
}

export function registerServerCommands(program: Command): void {
  program
    .command("serve")
    .requiredOption("--data <dir>", "where releases, channels and signed indexes are kept")
    .requiredOption("--keys <dir>", "an appliance keys directory holding update.pgp.key (signs channel indexes)")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on", "8080")
    .option("--token-file <file>", "operator token for publishing (or BASALT_TOKEN)")
    .description("serve releases to systemd-sysupdate on devices, with channels and an operator API")
    .action(async (o: { data: string; keys: string; host: string; port: string; tokenFile?: string }) => {
      const key = updateKeyPaths(o.keys);
      if (!existsSync(key.key)) throw new UserError(`${o.keys}: no update.pgp.key`, "run 'basalt keys init DIR' for the appliance");
      const token = readToken(o.tokenFile);
      const store = new LocalStore(o.data, (index) => signDetached(key, index));
      const app = createServer({ store, ...(token ? { token } : {}), logger: { level: "info" } });
      const stop = async () => {
        await app.close();
        process.exit(0);
      };
      process.on("SIGINT", () => void stop());
      process.on("SIGTERM", () => void stop());
      await app.listen({ host: o.host, port: Number(o.port) });
      if (!token) app.log.warn("no operator token: the API refuses every request");
    });

  program
    .command("publish")
    .argument("<dir>", "appliance directory; publishes the release of its definition's version")
    .requiredOption("--server <url>", "update server base URL")
    .option("--channel <name>", "channel to offer the release on", "stable")
    .option("--token-file <file>", "operator token (or BASALT_TOKEN)")
    .option("--json", "print the channel's new state as JSON")
    .description("upload a release to a basalt update server and offer it on a channel")
    .action(async (dir: string, o: { server: string; channel: string; tokenFile?: string; json?: boolean }) => {
      const token = readToken(o.tokenFile);
      if (!token) throw new UserError("no operator token", "pass --token-file or set BASALT_TOKEN");
      const reporter = createReporter({ quiet: Boolean(o.json) });
      reporter.phase("Publish");
      const state = await publishRelease(dir, { server: o.server, token, channel: o.channel, reporter });
      reporter.done();
      if (o.json) process.stdout.write(`${JSON.stringify(state, null, 2)}\n`);
      else process.stdout.write(`${pc.green("published")} ${state.id}: ${o.channel} now offers ${state.versions.join(", ")}\n`);
    });
}
