// basalt serve and basalt publish: the fleet server and the operator's way of publishing to it.
import { join } from "node:path";
import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import pc from "picocolors";
import { channel } from "../contract/ids.js";
import { UserError } from "../errors.js";
import { createReporter, runReported } from "../report/reporter.js";
import { credentialFiles, loadOrCreateSecret } from "../server/auth.js";
import { publishRelease } from "../server/publish.js";
import { createServer, DEFAULT_DEVICE_RATE_LIMIT, openFleet } from "../server/server.js";
import { addRolloutOptions, addServerOptions, count, parsedBy, rolloutOptions, seconds, serverConnection } from "./options.js";

/** Addresses or CIDRs, comma-separated: the proxies whose forwarding headers are believed. */
function proxyList(v: string): string[] {
  const list = v
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);
  for (const x of list) {
    if (!/^[0-9a-fA-F.:]+(\/\d{1,3})?$/.test(x)) throw new UserError(`--trust-proxy: not an address or CIDR: ${JSON.stringify(x)}`);
  }
  return list;
}

export function registerServerCommands(program: CommandUnknownOpts): void {
  program
    .command("serve")
    .requiredOption("--data <dir>", "where release files are kept (and the SQLite database by default)")
    .option("--database <url>", "fleet database: a SQLite file or a postgres:// URL (or BASALT_DATABASE; default DATA/fleet.db)")
    .option("--artifacts <where>", "where release files are kept: a directory or s3://BUCKET/PREFIX (or BASALT_ARTIFACTS; default DATA)")
    .option(
      "--s3-endpoint <url>",
      "S3-compatible endpoint, e.g. http://minio:9000 (or AWS_ENDPOINT_URL_S3; default AWS); keys from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    )
    .option("--s3-public-endpoint <url>", "the endpoint devices reach the bucket at, if not the same; their download redirects name it")
    .option("--s3-region <region>", "bucket region (or AWS_REGION; default us-east-1)")
    .option("--download-url <url>", "devices download release files from this CDN or public bucket URL (the store's layout below it) instead of the server")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on", "8080")
    .option("--token-file <file>", "operator token for the API and the dashboard (or BASALT_TOKEN)")
    .option("--operators-file <file>", "NAME:HASH lines (basalt fleet hash-password) who may sign in to the dashboard")
    .option(
      "--secret-file <file>",
      "the server secret for sessions and device tokens, made on first use; give replicas the same one (default DATA/server.secret)",
    )
    .option("--fleet-token-file <file>", "one token every device may report with, besides its own (weaker; see docs/fleet.md)")
    .option("--public-metrics", "serve /metrics without operator credentials")
    .option("--tls-cert <file>", "serve HTTPS with this certificate chain (PEM; re-read when it changes, or on SIGHUP)")
    .option("--tls-key <file>", "…and this private key (PEM, mode 0600)")
    .option("--trust-proxy <cidrs>", "proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For/-Proto are believed; none by default", proxyList)
    .option("--allow-plain-http", "accept operator credentials over plain HTTP from other hosts (otherwise only over HTTPS or from loopback)")
    .option(
      "--device-rate-limit <n>",
      `requests per minute one client address may make to the device routes (0: no limit)`,
      count("--device-rate-limit"),
      DEFAULT_DEVICE_RATE_LIMIT,
    )
    .option("--hold-seconds <n>", "how long a device keeps the index it was shown (index and signature are fetched together)", seconds("--hold-seconds"), 30)
    .description(
      "the fleet server (holds no key: it serves the indexes each release was signed with): releases, channels and staged rollouts for systemd-sysupdate, device inventory, dashboard, API, metrics",
    )
    .action(async (o) => {
      if (Boolean(o.tlsCert) !== Boolean(o.tlsKey)) throw new UserError("--tls-cert and --tls-key go together");
      let log: ((e: Error) => void) | undefined;
      // Files are re-read when they change: an operator removed from the operators file is signed out.
      const credentials = credentialFiles(
        {
          ...(o.tokenFile ? { tokenFile: o.tokenFile } : process.env.BASALT_TOKEN ? { token: process.env.BASALT_TOKEN } : {}),
          ...(o.operatorsFile ? { operatorsFile: o.operatorsFile } : {}),
          ...(o.fleetTokenFile ? { fleetTokenFile: o.fleetTokenFile } : {}),
        },
        (e) => log?.(e),
      );
      const { token, operators } = credentials();
      const database = o.database ?? process.env.BASALT_DATABASE;
      const artifacts = o.artifacts ?? process.env.BASALT_ARTIFACTS;
      const endpoint = o.s3Endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
      const s3 = {
        ...(endpoint ? { endpoint } : {}),
        ...(o.s3PublicEndpoint ? { publicEndpoint: o.s3PublicEndpoint } : {}),
        ...(o.s3Region ? { region: o.s3Region } : {}),
      };
      if (!artifacts?.startsWith("s3://") && (o.s3Endpoint || o.s3PublicEndpoint || o.s3Region)) {
        throw new UserError("--s3-endpoint, --s3-public-endpoint and --s3-region need --artifacts s3://BUCKET/PREFIX");
      }
      const fleet = await openFleet({
        data: o.data,
        ...(database ? { database } : {}),
        ...(artifacts ? { artifacts, s3 } : {}),
        ...(o.downloadUrl ? { downloadUrl: o.downloadUrl } : {}),
        holdSeconds: o.holdSeconds,
      });
      const secret = loadOrCreateSecret(o.secretFile ?? join(o.data, "server.secret"));
      const app = createServer({
        fleet,
        auth: { secret, credentials },
        logger: { level: "info" },
        publicMetrics: Boolean(o.publicMetrics),
        ...(o.trustProxy ? { trustProxy: o.trustProxy } : {}),
        ...(o.tlsCert && o.tlsKey ? { tls: { cert: o.tlsCert, key: o.tlsKey } } : {}),
        allowPlainHttp: Boolean(o.allowPlainHttp),
        deviceRateLimit: o.deviceRateLimit,
      });
      log = (e) => app.log.error({ err: e.message }, "credentials not reloaded; the previous ones stay");
      fleet.onError = (e, what) => app.log.error({ err: e.message }, what);
      // Scheduled rollout steps and automatic pauses; every replica may run it, each change applies once.
      const timer = setInterval(() => void fleet.tick().catch((e: Error) => app.log.error({ err: e.message }, "rollout scheduler")), 10_000);
      const stop = async () => {
        clearInterval(timer);
        await app.close();
        await fleet.db.close();
        process.exit(0);
      };
      process.on("SIGINT", () => void stop());
      process.on("SIGTERM", () => void stop());
      process.on("SIGHUP", () => {
        try {
          app.reloadTls();
          app.log.info("TLS certificate reloaded");
        } catch (e) {
          app.log.error({ err: (e as Error).message }, "TLS certificate not reloaded; the previous one stays");
        }
      });
      try {
        await app.listen({ host: o.host, port: Number(o.port) });
      } catch (e) {
        clearInterval(timer);
        await fleet.db.close();
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EADDRINUSE") throw new UserError(`${o.host}:${o.port}: the address is in use (another basalt serve?)`, "choose another --port");
        if (code === "EACCES") throw new UserError(`${o.host}:${o.port}: not allowed to listen there`);
        if (code === "EADDRNOTAVAIL") throw new UserError(`${o.host}: not an address of this machine`);
        throw e;
      }
      app.log.info({ artifacts: fleet.artifacts.where }, "release files");
      if (!token && !operators.length) app.log.warn("no operator token and no operators: the API and the dashboard refuse everyone");
    });

  addRolloutOptions(
    addServerOptions(
      program
        .command("publish")
        .argument("<dir>", "appliance directory; publishes the release of its definition's version")
        .option("--channel <name>", "channel to offer the release on", parsedBy(channel, "--channel"), "stable")
        .option("--json", "print the channel's new state as JSON"),
    ),
  )
    .description("upload a release to a basalt update server and offer it on a channel (all at once, or as a staged rollout)")
    .action(async (dir, o) => {
      const { server, token } = serverConnection(o);
      const rollout = rolloutOptions(o);
      const reporter = createReporter({ quiet: Boolean(o.json) });
      const state = await runReported(reporter, () => {
        reporter.phase("Publish");
        return publishRelease(dir, { server, token, channel: o.channel, rollout, reporter });
      });
      if (o.json) process.stdout.write(`${JSON.stringify(state, null, 2)}\n`);
      else {
        const offered = state.rollouts.map((r) => `${r.version}${r.percent < 100 ? ` (${r.percent}%)` : ""}${r.paused ? " paused" : ""}`).join(", ");
        process.stdout.write(`${pc.green("published")} ${state.id}: ${o.channel} now offers ${offered}\n`);
      }
    });
}
